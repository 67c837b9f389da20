package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver: no server, no cgo
)

// SQLite is the ledger in one file, for a single machine and make demo.
type SQLite struct{ db *sql.DB }

// schema is applied at open; IF NOT EXISTS makes it safe to repeat.
const schema = `
CREATE TABLE IF NOT EXISTS records (
  request_id TEXT PRIMARY KEY,
  time_ms INTEGER NOT NULL,
  user TEXT NOT NULL,
  groups TEXT NOT NULL,
  provider TEXT NOT NULL,
  model TEXT NOT NULL,
  billed_model TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  cached_tokens INTEGER NOT NULL,
  cache_write_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL,
  cost_nanos INTEGER NOT NULL,
  status INTEGER NOT NULL,
  stream INTEGER NOT NULL,
  disconnected INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL,
  budgets TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_time ON records (time_ms);
`

// OpenSQLite opens (or creates) the ledger file at path.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	// WAL: reports read while the writer appends; busy_timeout: a report
	// process and the sidecar share the file.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer; SQLite serialises writes anyway
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger schema: %w", err)
	}
	return &SQLite{db: db}, nil
}

func (s *SQLite) Append(ctx context.Context, rs []Record) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger append: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT OR IGNORE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`)
	if err != nil {
		return fmt.Errorf("ledger append: %w", err)
	}
	defer st.Close()
	for _, r := range rs {
		groups, _ := json.Marshal(nonNil(r.Groups))
		budgets, _ := json.Marshal(nonNil(r.Budgets))
		if _, err := st.ExecContext(ctx, r.RequestID, r.Time.UnixMilli(), r.User, string(groups), r.Provider, r.Model, r.BilledModel,
			r.Endpoint, r.PromptTokens, r.CompletionTokens, r.CachedTokens, r.CacheWriteTokens, r.ReasoningTokens, r.CostNanos,
			r.Status, r.Stream, r.Disconnected, r.DurationMS, string(budgets)); err != nil {
			return fmt.Errorf("ledger append %s: %w", r.RequestID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("ledger append: %w", err)
	}
	return nil
}

var sqliteDialect = dialect{table: "records", user: "user", time: "time_ms",
	day:   "strftime('%Y-%m-%d', time_ms / 1000, 'unixepoch')",
	group: "records, json_each(records.groups) AS g", groupKey: "g.value",
	param: func(int) string { return "?" }, arg: func(t time.Time) any { return t.UnixMilli() }}

func (s *SQLite) Report(ctx context.Context, q Query) ([]Row, error) {
	query, args, err := reportSQL(q, sqliteDialect)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger report: %w", err)
	}
	defer rows.Close()
	return scanReport(rows)
}

func (s *SQLite) Close() error { return s.db.Close() }

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return slices.Clone(v)
}
