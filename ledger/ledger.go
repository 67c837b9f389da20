// Package ledger keeps the durable record of spend: one row per settled
// request (who, which team, provider, model, tokens, cost in nano-dollars,
// status), written asynchronously from the settlement path, exactly once
// per request id, and the reports read from it (spend by user, group,
// provider, model or day). Redis holds today's counters; the ledger holds
// history.
package ledger

import (
	"context"
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

// Open opens the store a URL names: sqlite:///path/to/ledger.db.
func Open(ctx context.Context, url string) (Store, error) {
	if path, ok := strings.CutPrefix(url, "sqlite://"); ok && path != "" {
		return OpenSQLite(ctx, path)
	}
	return nil, fmt.Errorf("ledger URL %q: want sqlite:///path/to/ledger.db", url)
}
