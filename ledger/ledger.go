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
	User         string // only this identity's records, when set
}

// Row is one group of a report.
type Row struct {
	Key              string `json:"key"`
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
}

// reportSQL is the query of q in d, and its arguments.
func reportSQL(q Query, d dialect) (string, []any, error) {
	key, from := "", d.table
	switch q.By {
	case "user":
		key = d.user
	case "provider", "model":
		key = q.By
	case "day":
		key = d.day
	case "group":
		// A request counts once for each of its groups.
		key, from = d.groupKey, d.group
	default:
		return "", nil, fmt.Errorf("report by %q: want one of %v", q.By, Groupings)
	}
	where := d.time + " >= " + d.param(1) + " AND " + d.time + " < " + d.param(2)
	args := []any{d.arg(q.Since), d.arg(q.Until)}
	if q.User != "" {
		where, args = where+" AND "+d.user+" = "+d.param(3), append(args, q.User)
	}
	order := "5 DESC, 1"
	if q.By == "day" {
		order = "1"
	}
	return `SELECT ` + key + `, count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_nanos) FROM ` + from +
		` WHERE ` + where + ` GROUP BY 1 ORDER BY ` + order, args, nil
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
		if err := rs.Scan(&r.Key, &r.Requests, &r.PromptTokens, &r.CompletionTokens, &r.CostNanos); err != nil {
			return nil, fmt.Errorf("ledger report: %w", err)
		}
		out = append(out, r)
	}
	return out, rs.Err()
}
