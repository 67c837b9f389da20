package ledger

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are applied in name order at open, each once (the versions
// table), under an advisory lock: replicas starting together take turns.
//
//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the advisory lock key of the ledger's migrations.
const migrationLock = 0x61696677 // "aifw"

// Postgres is the ledger for fleets: records in a table partitioned by
// month, appended with COPY.
type Postgres struct {
	pool *pgxpool.Pool

	mu     sync.Mutex
	months map[string]bool // partitions known to exist
}

// OpenPostgres connects and brings the schema up to date.
func OpenPostgres(ctx context.Context, url string) (*Postgres, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return &Postgres{pool: pool, months: map[string]bool{}}, nil
}

func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return fmt.Errorf("ledger migrations: %w", err)
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, migrationLock)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS aifirewall_ledger_migrations (name text PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("ledger migrations: %w", err)
	}
	names, _ := fs.Glob(migrations, "migrations/*.sql")
	slices.Sort(names)
	for _, name := range names {
		var done bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM aifirewall_ledger_migrations WHERE name = $1)`, name).Scan(&done); err != nil {
			return fmt.Errorf("ledger migration %s: %w", name, err)
		}
		if done {
			continue
		}
		sql, _ := migrations.ReadFile(name)
		tx, err := conn.Begin(ctx)
		if err != nil {
			return fmt.Errorf("ledger migration %s: %w", name, err)
		}
		if _, err := tx.Exec(ctx, string(sql)); err != nil {
			tx.Rollback(ctx)
			return fmt.Errorf("ledger migration %s: %w", name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO aifirewall_ledger_migrations (name) VALUES ($1)`, name); err != nil {
			tx.Rollback(ctx)
			return fmt.Errorf("ledger migration %s: %w", name, err)
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("ledger migration %s: %w", name, err)
		}
	}
	return nil
}

var columns = []string{"request_id", "time", "user_id", "groups", "provider", "model", "billed_model", "endpoint",
	"prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "cost_nanos",
	"status", "stream", "disconnected", "duration_ms", "budgets"}

// Append copies rs into a staging table and moves them into the records
// table in one transaction, skipping request ids already there: a replay
// adds nothing twice.
func (p *Postgres) Append(ctx context.Context, rs []Record) error {
	if len(rs) == 0 {
		return nil
	}
	if err := p.partitions(ctx, rs); err != nil {
		return err
	}
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("ledger append: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE staging (LIKE aifirewall_ledger INCLUDING DEFAULTS) ON COMMIT DROP`); err != nil {
		return fmt.Errorf("ledger append: %w", err)
	}
	rows := make([][]any, len(rs))
	for i, r := range rs {
		rows[i] = []any{r.RequestID, r.Time.UTC(), r.User, nonNil(r.Groups), r.Provider, r.Model, r.BilledModel, r.Endpoint,
			r.PromptTokens, r.CompletionTokens, r.CachedTokens, r.CacheWriteTokens, r.ReasoningTokens, r.CostNanos,
			int32(r.Status), r.Stream, r.Disconnected, r.DurationMS, nonNil(r.Budgets)}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"staging"}, columns, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("ledger append: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO aifirewall_ledger SELECT * FROM staging ON CONFLICT DO NOTHING`); err != nil {
		return fmt.Errorf("ledger append: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("ledger append: %w", err)
	}
	return nil
}

// partitions makes the month partitions rs fall in, once per month.
func (p *Postgres) partitions(ctx context.Context, rs []Record) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rs {
		m := time.Date(r.Time.UTC().Year(), r.Time.UTC().Month(), 1, 0, 0, 0, 0, time.UTC)
		name := m.Format("2006_01")
		if p.months[name] {
			continue
		}
		if _, err := p.pool.Exec(ctx, `SELECT aifirewall_ledger_partition($1)`, m); err != nil {
			return fmt.Errorf("ledger partition %s: %w", name, err)
		}
		p.months[name] = true
	}
	return nil
}

var postgresDialect = dialect{table: "aifirewall_ledger", user: "user_id", time: "time",
	day:   "to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
	group: "aifirewall_ledger, unnest(groups) AS g", groupKey: "g",
	param: func(n int) string { return fmt.Sprintf("$%d", n) }, arg: func(t time.Time) any { return t.UTC() },
	count: "count(*)"}

func (p *Postgres) Report(ctx context.Context, q Query) ([]Row, error) {
	query, args, err := reportSQL(q, postgresDialect)
	if err != nil {
		return nil, err
	}
	// Sums of bigint are numeric in PostgreSQL: back to bigint.
	query = strings.NewReplacer("sum(prompt_tokens)", "sum(prompt_tokens)::bigint", "sum(completion_tokens)", "sum(completion_tokens)::bigint",
		"sum(cost_nanos)", "sum(cost_nanos)::bigint").Replace(query)
	rows, err := p.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger report: %w", err)
	}
	defer rows.Close()
	return scanReport(rows)
}

func (p *Postgres) Close() error { p.pool.Close(); return nil }
