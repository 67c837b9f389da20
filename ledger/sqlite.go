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

// dailySchema is version 1: the records summed by UTC day, user, groups,
// provider and model, kept in the transaction that appends them. Reports
// over whole days read it, so a month of a million records sums a few
// thousand rows instead of a million.
const dailySchema = `
CREATE TABLE IF NOT EXISTS daily (
  day TEXT NOT NULL,
  user TEXT NOT NULL,
  groups TEXT NOT NULL,
  provider TEXT NOT NULL,
  model TEXT NOT NULL,
  requests INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  cost_nanos INTEGER NOT NULL,
  PRIMARY KEY (day, user, groups, provider, model)
) WITHOUT ROWID;
INSERT INTO daily SELECT strftime('%Y-%m-%d', time_ms / 1000, 'unixepoch'), user, groups, provider, model,
  count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_nanos) FROM records GROUP BY 1, 2, 3, 4, 5;
PRAGMA user_version = 1;
`

// OpenSQLite opens (or creates) the ledger file at path.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	// WAL: reports read while the writer appends; busy_timeout: a report
	// process and the sidecar share the file; synchronous NORMAL: a commit
	// is not synced until the checkpoint (the file stays consistent; a
	// power cut can lose the last commits, as a crash loses the records
	// the writer still holds in memory), and commits cost less.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)")
	if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer; SQLite serialises writes anyway
	if err := sqliteMigrate(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return &SQLite{db: db}, nil
}

// sqliteMigrate brings the file to the current schema. BEGIN IMMEDIATE
// takes the write lock first: a report process and the sidecar opening
// one file together migrate it once.
func sqliteMigrate(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("ledger schema: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("ledger schema: %w", err)
	}
	var version int
	err = conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version)
	if err == nil {
		_, err = conn.ExecContext(ctx, schema)
	}
	if err == nil && version < 1 {
		_, err = conn.ExecContext(ctx, dailySchema)
	}
	if err != nil {
		conn.ExecContext(context.Background(), "ROLLBACK")
		return fmt.Errorf("ledger schema: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("ledger schema: %w", err)
	}
	return nil
}

// dayKey is a row of the daily table.
type dayKey struct{ day, user, groups, provider, model string }

type daySums struct{ requests, prompt, completion, cost int64 }

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
	sums := map[dayKey]*daySums{}
	for _, r := range rs {
		groups, _ := json.Marshal(nonNil(r.Groups))
		budgets, _ := json.Marshal(nonNil(r.Budgets))
		res, err := st.ExecContext(ctx, r.RequestID, r.Time.UnixMilli(), r.User, string(groups), r.Provider, r.Model, r.BilledModel,
			r.Endpoint, r.PromptTokens, r.CompletionTokens, r.CachedTokens, r.CacheWriteTokens, r.ReasoningTokens, r.CostNanos,
			r.Status, r.Stream, r.Disconnected, r.DurationMS, string(budgets))
		if err != nil {
			return fmt.Errorf("ledger append %s: %w", r.RequestID, err)
		}
		// A replayed record is ignored, and must not be summed again.
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			continue
		}
		k := dayKey{time.UnixMilli(r.Time.UnixMilli()).UTC().Format(time.DateOnly), r.User, string(groups), r.Provider, r.Model}
		d := sums[k]
		if d == nil {
			d = &daySums{}
			sums[k] = d
		}
		d.requests++
		d.prompt += r.PromptTokens
		d.completion += r.CompletionTokens
		d.cost += r.CostNanos
	}
	for k, d := range sums {
		if _, err := tx.ExecContext(ctx, `INSERT INTO daily VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET
  requests = requests + excluded.requests, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
  completion_tokens = completion_tokens + excluded.completion_tokens, cost_nanos = cost_nanos + excluded.cost_nanos`,
			k.day, k.user, k.groups, k.provider, k.model, d.requests, d.prompt, d.completion, d.cost); err != nil {
			return fmt.Errorf("ledger append: %w", err)
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
	param: func(int) string { return "?" }, arg: func(t time.Time) any { return t.UnixMilli() },
	count: "count(*)"}

// dailyDialect reads the daily sums: for reports over whole UTC days.
var dailyDialect = dialect{table: "daily", user: "user", time: "day", day: "day",
	group: "daily, json_each(daily.groups) AS g", groupKey: "g.value",
	param: func(int) string { return "?" }, arg: func(t time.Time) any { return t.UTC().Format(time.DateOnly) },
	count: "sum(requests)"}

func (s *SQLite) Report(ctx context.Context, q Query) ([]Row, error) {
	d := sqliteDialect
	if wholeDay(q.Since) && wholeDay(q.Until) {
		d = dailyDialect
	}
	query, args, err := reportSQL(q, d)
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

// wholeDay reports whether t is a UTC midnight.
func wholeDay(t time.Time) bool {
	t = t.UTC()
	return t.Equal(time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC))
}

func (s *SQLite) Close() error { return s.db.Close() }

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return slices.Clone(v)
}
