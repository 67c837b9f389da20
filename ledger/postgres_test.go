package ledger

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// Replicas starting together against an empty database: each applies the
// migrations or waits for the one applying them; all of them work.
func TestPostgresReplicasMigrateTogether(t *testing.T) {
	url := testinfra.StartPostgres(t).URL()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Go(func() {
			p, err := OpenPostgres(context.Background(), url)
			if err != nil {
				errs <- err
				return
			}
			defer p.Close()
			errs <- p.Append(context.Background(), []Record{record(fmt.Sprintf("replica-%d", i), "u", "m", nil, 1, time.Now())})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// The database killed under load: the writer spools what it cannot
// append, and once PostgreSQL is back replays it; every record is there
// exactly once.
func TestPostgresKilledUnderLoad(t *testing.T) {
	ctx := context.Background()
	pg := testinfra.StartPostgres(t)
	store, err := OpenPostgres(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	w, err := NewWriter(store, filepath.Join(t.TempDir(), "ledger.jsonl"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	go w.Run(wctx)
	const producers, each = 8, 2000
	at := time.Now()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				w.Add(record(fmt.Sprintf("p%d-%d", p, i), fmt.Sprintf("user-%d", p), "gpt-4o-mini", []string{"team"}, 3, at))
				time.Sleep(200 * time.Microsecond) // about 5,000 records/s in all
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	pg.Stop()
	killed := time.Now()
	time.Sleep(1500 * time.Millisecond)
	pg.Start()
	t.Logf("PostgreSQL down for %v under load", time.Since(killed).Round(10*time.Millisecond))
	wg.Wait()
	stop()
	w.Wait()
	rows, err := store.Report(ctx, Query{Since: at.Add(-time.Minute), Until: at.Add(time.Minute), By: "group"})
	if err != nil || len(rows) != 1 || rows[0].Requests != producers*each || rows[0].CostNanos != 3*producers*each {
		t.Fatalf("after the outage: %v %v, want %d records once each", rows, err, producers*each)
	}
	if w.Spooled() == 0 {
		t.Fatal("nothing went through the spool: the outage was not met")
	}
	t.Logf("%d records, %d of them spooled through the outage, each written once", producers*each, w.Spooled())
}

// Ledger write throughput into PostgreSQL: batches of 500 through COPY.
func BenchmarkPostgresAppend(b *testing.B) {
	ctx := context.Background()
	store, err := OpenPostgres(ctx, testinfra.StartPostgres(b).URL())
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	at := time.Now()
	batch := make([]Record, batchSize)
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for i := range batch {
			batch[i] = record(fmt.Sprintf("b%d-%d", n, i), "u", "gpt-4o-mini", []string{"team"}, 1, at)
		}
		if err := store.Append(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "records/s")
}

// A month's report over a million records, grouped by model (target: under
// a second): go test -run '^$' -bench BenchmarkMonthReport -benchtime 5x ./ledger/
func BenchmarkMonthReport(b *testing.B) {
	ctx := context.Background()
	for name, open := range map[string]func() (Store, error){
		"postgres": func() (Store, error) { return OpenPostgres(ctx, testinfra.StartPostgres(b).URL()) },
		"sqlite":   func() (Store, error) { return OpenSQLite(ctx, filepath.Join(b.TempDir(), "ledger.db")) },
	} {
		b.Run(name, func(b *testing.B) {
			s, err := open()
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			month := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
			models := []string{"gpt-4o", "gpt-4o-mini", "claude-haiku-4-5", "claude-sonnet-4", "o3-mini"}
			batch := make([]Record, 5000)
			for n := 0; n < 1_000_000; n += len(batch) {
				for i := range batch {
					k := n + i
					batch[i] = record(fmt.Sprintf("m%d", k), fmt.Sprintf("user-%d", k%500), models[k%len(models)],
						[]string{fmt.Sprintf("team-%d", k%20)}, int64(k%1000), month.Add(time.Duration(k)*2*time.Second))
				}
				if err := s.Append(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for range b.N {
				rows, err := s.Report(ctx, Query{Since: month, Until: month.AddDate(0, 1, 0), By: "model"})
				if err != nil || len(rows) != len(models) {
					b.Fatalf("%v %v", rows, err)
				}
			}
		})
	}
}
