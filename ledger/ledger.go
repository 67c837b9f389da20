// Package ledger keeps the durable record of spend: one row per settled
// request (who, which team, provider, model, tokens, cost in nano-dollars,
// status), written asynchronously from the settlement path, exactly once
// per request id, and the reports read from it (spend by user, group,
// provider, model or day). Redis holds today's counters; the ledger holds
// history.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Record is one settled request.
type Record struct {
	Time             time.Time `json:"time"` // when it settled
	RequestID        string    `json:"request_id"`
	User             string    `json:"user"`
	Groups           []string  `json:"groups,omitempty"`
	Provider         string    `json:"provider"`
	Model            string    `json:"model"`        // as requested
	BilledModel      string    `json:"billed_model"` // as answered and billed
	Endpoint         string    `json:"endpoint"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	CachedTokens     int64     `json:"cached_tokens"`
	CacheWriteTokens int64     `json:"cache_write_tokens"`
	ReasoningTokens  int64     `json:"reasoning_tokens"`
	CostNanos        int64     `json:"cost_nanos"`
	Status           int       `json:"status"`
	Stream           bool      `json:"stream"`
	Disconnected     bool      `json:"disconnected"` // the response did not end normally
	DurationMS       int64     `json:"duration_ms"`
	Budgets          []string  `json:"budgets,omitempty"` // of the budgets file, besides the daily one
}

// Store keeps records. Append is idempotent by request id: a batch
// replayed after an outage adds nothing twice.
type Store interface {
	Append(ctx context.Context, rs []Record) error
	Report(ctx context.Context, q Query) ([]Row, error)
	Close() error
}

// Query selects records settled in [Since, Until) and groups them By.
type Query struct {
	Since, Until time.Time
	By           string // user, group, provider, model, day
	// Split, when set, splits each group again (a day's spend by model,
	// for a chart); it takes the same names as By.
	Split string
	User  string // only this identity's records, when set
}

// Row is one group of a report.
type Row struct {
	Key              string `json:"key"`
	Split            string `json:"split,omitempty"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	CostNanos        int64  `json:"cost_nanos"`
}

// Groupings a report may use.
var Groupings = []string{"user", "group", "provider", "model", "day"}

// Open opens the store a URL names: sqlite:///path/to/ledger.db, or
// postgres://user:pass@host:5432/db (PostgreSQL, for fleets).
func Open(ctx context.Context, url string) (Store, error) {
	if path, ok := strings.CutPrefix(url, "sqlite://"); ok && path != "" {
		return OpenSQLite(ctx, path)
	}
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		return OpenPostgres(ctx, url)
	}
	return nil, errors.New("ledger URL: want sqlite:///path/to/ledger.db or postgres://user:password@host:5432/database")
}

// dialect is how a store's SQL names what a report groups and filters by.
type dialect struct {
	table, user, day, time string
	// group is the FROM clause that unnests groups, groupKey one group.
	group, groupKey string
	param           func(n int) string // the nth placeholder
	arg             func(t time.Time) any
	count           string // how many requests a row of table is
}

// column is what a report groups by in d, and the FROM clause it needs.
func (d dialect) column(by string) (key, from string, err error) {
	switch by {
	case "user":
		return d.user, d.table, nil
	case "provider", "model":
		return by, d.table, nil
	case "day":
		return d.day, d.table, nil
	case "group":
		// A request counts once for each of its groups.
		return d.groupKey, d.group, nil
	}
	return "", "", fmt.Errorf("report by %q: want one of %v", by, Groupings)
}

// reportSQL is the query of q in d, and its arguments.
func reportSQL(q Query, d dialect) (string, []any, error) {
	key, from, err := d.column(q.By)
	if err != nil {
		return "", nil, err
	}
	// Columns: key, split, requests, prompt, completion, cost.
	keys, order := key+", ''", "6 DESC, 1"
	if q.By == "day" {
		order = "1"
	}
	if q.Split != "" {
		split, splitFrom, err := d.column(q.Split)
		if err != nil {
			return "", nil, err
		}
		if q.Split == q.By || (from != d.table && splitFrom != d.table) {
			return "", nil, fmt.Errorf("report by %s split by %s: give two different groupings", q.By, q.Split)
		}
		if from == d.table {
			from = splitFrom
		}
		keys, order = key+", "+split, "1, 6 DESC, 2"
	}
	where := d.time + " >= " + d.param(1) + " AND " + d.time + " < " + d.param(2)
	args := []any{d.arg(q.Since), d.arg(q.Until)}
	if q.User != "" {
		where, args = where+" AND "+d.user+" = "+d.param(3), append(args, q.User)
	}
	return `SELECT ` + keys + `, ` + d.count + `, sum(prompt_tokens), sum(completion_tokens), sum(cost_nanos) FROM ` + from +
		` WHERE ` + where + ` GROUP BY 1, 2 ORDER BY ` + order, args, nil
}

// rows are a report query's rows, from either driver.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

func scanReport(rs rows) ([]Row, error) {
	var out []Row
	for rs.Next() {
		var r Row
		if err := rs.Scan(&r.Key, &r.Split, &r.Requests, &r.PromptTokens, &r.CompletionTokens, &r.CostNanos); err != nil {
			return nil, fmt.Errorf("ledger report: %w", err)
		}
		out = append(out, r)
	}
	return out, rs.Err()
}
