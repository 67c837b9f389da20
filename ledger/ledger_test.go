package ledger

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

func record(id, user, model string, groups []string, cost int64, at time.Time) Record {
	return Record{Time: at, RequestID: id, User: user, Groups: groups, Provider: "openai", Model: model, BilledModel: model,
		Endpoint: "/v1/chat/completions", PromptTokens: 10, CompletionTokens: 5, CostNanos: cost, Status: 200, Stream: true}
}

// stores are the ledgers every store test runs against: SQLite, and
// PostgreSQL (a server of the test's own).
func stores(t *testing.T) map[string]Store {
	t.Helper()
	ctx := context.Background()
	lite, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	pg, err := OpenPostgres(ctx, testinfra.StartPostgres(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lite.Close(); pg.Close() })
	return map[string]Store{"sqlite": lite, "postgres": pg}
}

func TestAppendIsIdempotentAndReports(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) { appendAndReport(t, s) })
	}
}

func appendAndReport(t *testing.T, s Store) {
	ctx := context.Background()
	day := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	rs := []Record{
		record("r1", "alice", "gpt-4o", []string{"payments", "eng"}, 100, day),
		record("r2", "bob", "gpt-4o-mini", []string{"payments"}, 30, day.Add(time.Hour)),
		record("r3", "alice", "gpt-4o-mini", nil, 7, day.Add(24*time.Hour)),
	}
	for range 2 { // the second time adds nothing
		if err := s.Append(ctx, rs); err != nil {
			t.Fatal(err)
		}
	}
	q := Query{Since: day.Add(-time.Hour), Until: day.Add(48 * time.Hour)}
	for by, want := range map[string]string{
		"user":  "[{alice  2 20 10 107} {bob  1 10 5 30}]",
		"model": "[{gpt-4o  1 10 5 100} {gpt-4o-mini  2 20 10 37}]",
		"group": "[{payments  2 20 10 130} {eng  1 10 5 100}]",
		"day":   "[{2026-12-01  2 20 10 130} {2026-12-02  1 10 5 7}]",
	} {
		q.By = by
		got, err := s.Report(ctx, q)
		if err != nil || fmt.Sprint(got) != want {
			t.Errorf("by %s: %v %v, want %s", by, got, err, want)
		}
	}
	q.By, q.Until = "user", day.Add(23*time.Hour)
	if got, _ := s.Report(ctx, q); fmt.Sprint(got) != "[{alice  1 10 5 100} {bob  1 10 5 30}]" {
		t.Errorf("a day's window: %v", got)
	}
	q = Query{Since: day.Add(-time.Hour), Until: day.Add(48 * time.Hour), By: "day", User: "alice"}
	if got, _ := s.Report(ctx, q); fmt.Sprint(got) != "[{2026-12-01  1 10 5 100} {2026-12-02  1 10 5 7}]" {
		t.Errorf("alice's days: %v", got)
	}
	if _, err := s.Report(ctx, Query{By: "color"}); err == nil {
		t.Error("an unknown grouping was taken")
	}
	whole := Query{Since: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)}
	for q, want := range map[Query]string{
		{By: "day", Split: "model"}:   "[{2026-12-01 gpt-4o 1 10 5 100} {2026-12-01 gpt-4o-mini 1 10 5 30} {2026-12-02 gpt-4o-mini 1 10 5 7}]",
		{By: "day", Split: "group"}:   "[{2026-12-01 payments 2 20 10 130} {2026-12-01 eng 1 10 5 100}]",
		{By: "group", Split: "model"}: "[{eng gpt-4o 1 10 5 100} {payments gpt-4o 1 10 5 100} {payments gpt-4o-mini 1 10 5 30}]",
	} {
		q.Since, q.Until = whole.Since, whole.Until
		if got, err := s.Report(ctx, q); err != nil || fmt.Sprint(got) != want {
			t.Errorf("by %s split by %s: %v %v, want %s", q.By, q.Split, got, err, want)
		}
	}
	for _, bad := range []Query{{By: "day", Split: "day"}, {By: "group", Split: "group"}, {By: "day", Split: "color"}} {
		if _, err := s.Report(ctx, bad); err == nil {
			t.Errorf("by %s split by %s was taken", bad.By, bad.Split)
		}
	}
	// Whole days and a millisecond short of them read different tables
	// in SQLite (the daily sums, the records): the same answers.
	for _, by := range Groupings {
		for _, split := range append([]string{""}, Groupings...) {
			q := whole
			q.By, q.Split = by, split
			a, errA := s.Report(ctx, q)
			q.Until = q.Until.Add(-time.Millisecond)
			b, errB := s.Report(ctx, q)
			if fmt.Sprint(a, errA) != fmt.Sprint(b, errB) {
				t.Errorf("by %s split by %s: whole days %v %v, records %v %v", by, split, a, errA, b, errB)
			}
		}
	}
}

// A ledger file from before the daily sums gets them at open, from its records.
func TestSQLiteSumsAnOldFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if err := s.Append(ctx, []Record{record("r1", "alice", "gpt-4o", nil, 100, day), record("r2", "bob", "gpt-4o", nil, 30, day)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, "DROP TABLE daily; PRAGMA user_version = 0"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = OpenSQLite(ctx, path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rows, err := s.Report(ctx, Query{Since: day.Truncate(24 * time.Hour), Until: day.Truncate(24*time.Hour).AddDate(0, 0, 1), By: "user"})
	if err != nil || fmt.Sprint(rows) != "[{alice  1 10 5 100} {bob  1 10 5 30}]" {
		t.Fatalf("after the upgrade: %v %v", rows, err)
	}
}

// flaky refuses appends while down.
type flaky struct {
	Store
	mu   sync.Mutex
	down bool
}

func (f *flaky) Append(ctx context.Context, rs []Record) error {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		return errors.New("ledger down")
	}
	return f.Store.Append(ctx, rs)
}

// A ledger outage: records are spooled, then replayed once it is back,
// every one written exactly once.
func TestWriterSpoolsThroughAnOutage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenSQLite(ctx, filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := &flaky{Store: s, down: true}
	w, err := NewWriter(f, filepath.Join(dir, "spool", "ledger.jsonl"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	go w.Run(rctx)
	at := time.Now()
	for i := range 1200 {
		w.Add(record(fmt.Sprintf("r%d", i), "alice", "gpt-4o", nil, 1, at))
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st, err := os.Stat(w.spool); err == nil && st.Size() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing was spooled while the ledger was down")
		}
	}
	f.mu.Lock()
	f.down = false
	f.mu.Unlock()
	for i := 1200; i < 1300; i++ {
		w.Add(record(fmt.Sprintf("r%d", i), "alice", "gpt-4o", nil, 1, at))
	}
	stop()
	w.Wait()
	rows, err := s.Report(ctx, Query{Since: at.Add(-time.Minute), Until: at.Add(time.Minute), By: "user"})
	if err != nil || len(rows) != 1 || rows[0].Requests != 1300 || rows[0].CostNanos != 1300 {
		t.Fatalf("after the outage: %v %v, want 1300 records once each", rows, err)
	}
	if w.Spooled() == 0 {
		t.Fatal("nothing was spooled")
	}
	if _, err := os.Stat(w.spool); !os.IsNotExist(err) {
		t.Fatalf("the spool is left: %v", err)
	}
}
