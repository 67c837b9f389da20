package billing

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// With Redis down, settlements go to the fsynced spool; a new settler (a
// restarted sidecar) replays them once Redis is back, exactly once.
func TestSettlerSpoolsAndReplaysExactlyOnce(t *testing.T) {
	r := testinfra.StartRedis(t)
	store, err := NewRedisStore(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	spool := filepath.Join(t.TempDir(), "spool", "settlements.jsonl")
	ctx := context.Background()

	// One settlement lands before the outage; it will be replayed too.
	first := Settlement{User: "u", Day: "d", RequestID: "before", Amount: 100}
	if _, err := store.Settle(ctx, first); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	s, err := NewSettler(store, spool, 10, 200*time.Millisecond, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.Settle(Settlement{User: "u", Day: "d", RequestID: "during-1", Amount: 20}, quiet)
	s.Settle(Settlement{User: "u", Day: "d", RequestID: "during-2", Amount: 3}, quiet)
	s.enqueue(first, quiet) // as if its reply had been lost
	if err := s.Flush(ctx); err == nil {
		t.Fatal("flush with Redis down reported nothing pending")
	}
	if n := s.Pending(); n != 3 {
		t.Fatalf("pending = %d", n)
	}
	raw, _ := os.ReadFile(spool)
	if lines := strings.Count(string(raw), "\n"); lines != 3 {
		t.Fatalf("spool holds %d lines:\n%s", lines, raw)
	}
	s.Close() // the sidecar stops with the queue in the spool

	r.Start() // Redis comes back, empty: persistence is off in tests
	store.Settle(ctx, first)
	again, err := NewSettler(store, spool, 10, time.Second, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if n := again.Pending(); n != 3 {
		t.Fatalf("replayed %d settlements, want 3", n)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { again.Run(runCtx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for again.Pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	<-done
	b, err := store.Budget(ctx, "u", "d", 1000)
	if err != nil || b.Spent != 123 {
		t.Fatalf("spent = %d, %v; want 123 (100 once, 20, 3)", b.Spent, err)
	}
	if raw, _ := os.ReadFile(spool); len(raw) != 0 {
		t.Fatalf("spool not emptied:\n%s", raw)
	}
}

func TestSettlerQueueIsBounded(t *testing.T) {
	s, err := NewSettler(downSettle{}, "", 2, 10*time.Millisecond, quiet)
	if err != nil {
		t.Fatal(err)
	}
	var lost []string
	s.OnLost = func(set Settlement) { lost = append(lost, set.RequestID) }
	for _, id := range []string{"a", "b", "c"} {
		s.enqueue(Settlement{User: "u", Day: "d", RequestID: id, Amount: 1}, quiet)
	}
	if s.Pending() != 2 || len(lost) != 1 || lost[0] != "c" {
		t.Fatalf("pending %d, lost %v", s.Pending(), lost)
	}
}

// A torn last line (a crash mid-write) is skipped, the rest replayed.
func TestSpoolSurvivesATornLine(t *testing.T) {
	spool := filepath.Join(t.TempDir(), "s.jsonl")
	os.WriteFile(spool, []byte(`{"user":"u","day":"d","request_id":"ok","amount_nanos":5}`+"\n"+`{"user":"u","da`), 0o600)
	s, err := NewSettler(downSettle{}, spool, 10, time.Millisecond, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Pending() != 1 {
		t.Fatalf("pending = %d", s.Pending())
	}
}

type downSettle struct{ Store }

func (downSettle) Settle(context.Context, Settlement) (bool, error) {
	return false, context.DeadlineExceeded
}

// Run and Flush may retry at the same time (a shutdown while Redis comes
// back): every queued settlement still lands exactly once.
func TestSettlerConcurrentRetries(t *testing.T) {
	store := NewMemStore()
	s, err := NewSettler(store, filepath.Join(t.TempDir(), "s.jsonl"), 1000, time.Second, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 200 {
		s.enqueue(Settlement{User: "u", Day: "d", RequestID: fmt.Sprint(i), Amount: 1}, quiet)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	for range 5 {
		s.Flush(context.Background())
	}
	cancel()
	<-done
	if b, _ := store.Budget(context.Background(), "u", "d", 1000); b.Spent != 200 || s.Pending() != 0 {
		t.Fatalf("spent %d, pending %d", b.Spent, s.Pending())
	}
}
