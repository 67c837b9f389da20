package ledger

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Writer takes records from the settlement path without waiting on the
// store, and appends them in batches. What the store does not take (it is
// down, or slow enough that the queue fills) goes to a spool file, JSON
// lines, replayed in order before anything newer once the store answers.
// The store's idempotent Append makes a replay of a batch it had taken
// after all (a timeout) harmless: nothing lost, nothing doubled.
type Writer struct {
	store Store
	spool string
	log   *slog.Logger
	ch    chan Record
	mu    sync.Mutex // the spool file
	done  chan struct{}

	spooled atomic.Int64
}

// Spooled counts the records that went through the spool.
func (w *Writer) Spooled() int64 { return w.spooled.Load() }

const (
	queueSize = 10_000
	batchSize = 2000 // a busy sidecar's second (2,000 requests) in one commit, not four
	flushTick = time.Second
)

// NewWriter writes to store, spooling to the file spool.
func NewWriter(store Store, spool string, log *slog.Logger) (*Writer, error) {
	if err := os.MkdirAll(filepath.Dir(spool), 0o700); err != nil {
		return nil, fmt.Errorf("ledger spool directory: %w", err)
	}
	return &Writer{store: store, spool: spool, log: log, ch: make(chan Record, queueSize), done: make(chan struct{})}, nil
}

// Add queues r; it never waits on the store.
func (w *Writer) Add(r Record) {
	select {
	case w.ch <- r:
	default:
		w.spoolAll([]Record{r})
	}
}

// Run writes until ctx ends, then writes (or spools) what is queued.
func (w *Writer) Run(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(flushTick)
	defer t.Stop()
	var batch []Record
	for {
		select {
		case r := <-w.ch:
			if batch = append(batch, r); len(batch) >= batchSize {
				batch = w.flush(ctx, batch)
			}
		case <-t.C:
			batch = w.flush(ctx, batch)
		case <-ctx.Done():
			for {
				select {
				case r := <-w.ch:
					batch = append(batch, r)
					continue
				default:
				}
				break
			}
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			w.flush(fctx, batch)
			cancel()
			return
		}
	}
}

// Wait returns once Run has written or spooled everything.
func (w *Writer) Wait() { <-w.done }

// flush replays the spool, then appends batch; what fails is spooled.
func (w *Writer) flush(ctx context.Context, batch []Record) []Record {
	if err := w.replay(ctx); err != nil {
		w.spoolAll(batch)
		return batch[:0]
	}
	if len(batch) == 0 {
		return batch
	}
	if err := w.store.Append(ctx, batch); err != nil {
		w.log.Warn("ledger unavailable; records spooled until it answers", "records", len(batch), "err", err)
		w.spoolAll(batch)
	}
	return batch[:0]
}

// replay appends the spool's records, oldest first, and empties it.
func (w *Writer) replay(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, err := os.Open(w.spool)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	var rs []Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.RequestID != "" {
			rs = append(rs, r)
		}
	}
	for i := 0; i < len(rs); i += batchSize {
		if err := w.store.Append(ctx, rs[i:min(i+batchSize, len(rs))]); err != nil {
			return err
		}
	}
	if len(rs) > 0 {
		w.log.Info("ledger spool replayed", "records", len(rs))
	}
	return os.Remove(w.spool)
}

func (w *Writer) spoolAll(rs []Record) {
	if len(rs) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	f, err := os.OpenFile(w.spool, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		w.log.Error("ledger records lost: the spool cannot be written", "records", len(rs), "err", err)
		return
	}
	defer f.Close()
	w.spooled.Add(int64(len(rs)))
	bw := bufio.NewWriter(f)
	for _, r := range rs {
		b, _ := json.Marshal(r)
		bw.Write(append(b, '\n'))
	}
	if err := bw.Flush(); err != nil {
		w.log.Error("ledger records lost: the spool cannot be written", "records", len(rs), "err", err)
	}
}
