package billing

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
	"time"
)

// Settler applies settlements to the store without ever holding up a
// request. A settlement the store cannot take now (Redis down, a timeout)
// joins a bounded retry queue backed by an append-only spool file, fsynced
// before Settle returns, so it survives a crash; the queue is replayed at
// start and retried until it lands. Settlement is idempotent per request
// id, so a replay of one that did land in fact bills nothing twice.
type Settler struct {
	store   Store
	path    string // "" keeps the queue in memory only
	timeout time.Duration
	max     int
	log     *slog.Logger

	// OnLost is called for a settlement dropped because the queue is full.
	OnLost func(Settlement)

	mu      sync.Mutex
	pending []Settlement
	file    *os.File

	// retrying serialises retry rounds (Run's and Flush's): two rounds on
	// one batch would each remove it from the queue.
	retrying sync.Mutex

	inflight sync.WaitGroup
	wake     chan struct{}
}

// NewSettler opens (or creates) the spool at path and queues what it holds.
func NewSettler(store Store, path string, max int, timeout time.Duration, log *slog.Logger) (*Settler, error) {
	s := &Settler{store: store, path: path, timeout: timeout, max: max, log: log, wake: make(chan struct{}, 1)}
	if path == "" {
		return s, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("spool directory: %w", err)
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	s.file = f
	if len(s.pending) > 0 {
		log.Warn("replaying spooled settlements", "count", len(s.pending), "spool", path)
	}
	return s, nil
}

func (s *Settler) load() error {
	f, err := os.Open(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read spool: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var set Settlement
		if err := json.Unmarshal(sc.Bytes(), &set); err != nil || set.RequestID == "" {
			// A line torn by a crash mid-write: it was never acknowledged.
			s.log.Warn("skipping an unreadable spool line")
			continue
		}
		s.pending = append(s.pending, set)
	}
	return sc.Err()
}

// Settle writes set now if the store answers, else queues it.
func (s *Settler) Settle(set Settlement, log *slog.Logger) {
	if set.Amount < 0 || set.Amount > MaxCharge {
		// Never credit a budget, never overflow a day's total.
		log.Error("settlement amount out of range; clamped", "cost_nanos", int64(set.Amount))
		set.Amount = min(max(set.Amount, 0), MaxCharge)
	}
	s.inflight.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		applied, err := s.store.Settle(ctx, set)
		cancel()
		switch {
		case err == nil && !applied:
			log.Info("settlement already applied", "cost_nanos", int64(set.Amount))
		case err != nil:
			log.Warn("budget store unavailable; settlement queued", "cost_nanos", int64(set.Amount), "err", err)
			s.enqueue(set, log)
		}
	})
}

func (s *Settler) enqueue(set Settlement, log *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) >= s.max {
		log.Error("settlement lost: the retry queue is full", "cost_nanos", int64(set.Amount), "user", set.User, "day", set.Day)
		if s.OnLost != nil {
			s.OnLost(set)
		}
		return
	}
	if s.file != nil {
		line, _ := json.Marshal(set)
		_, err := s.file.Write(append(line, '\n'))
		if err == nil {
			err = s.file.Sync()
		}
		if err != nil {
			log.Error("spool write failed; settlement queued in memory only", "err", err)
		}
	}
	s.pending = append(s.pending, set)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Pending is the number of queued settlements.
func (s *Settler) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// Run retries the queue until ctx ends: at once when something is queued,
// then with a backoff from 200 ms to 5 s while the store stays down.
func (s *Settler) Run(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for {
		if s.retry(ctx) {
			backoff = 200 * time.Millisecond
		} else {
			backoff = min(2*backoff, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-time.After(backoff):
		}
	}
}

// retry applies queued settlements in order until one fails; it reports
// whether the queue is empty afterwards.
func (s *Settler) retry(ctx context.Context) bool {
	s.retrying.Lock()
	defer s.retrying.Unlock()
	s.mu.Lock()
	batch := append([]Settlement(nil), s.pending...)
	s.mu.Unlock()
	if len(batch) == 0 {
		return true
	}
	done := 0
	for _, set := range batch {
		sctx, cancel := context.WithTimeout(ctx, s.timeout)
		_, err := s.store.Settle(sctx, set)
		cancel()
		if err != nil {
			break
		}
		done++
	}
	if done == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = s.pending[done:]
	if err := s.compact(); err != nil {
		s.log.Error("spool not compacted; its applied entries will replay harmlessly", "err", err)
	}
	s.log.Info("queued settlements applied", "count", done, "still_queued", len(s.pending))
	return len(s.pending) == 0
}

// compact rewrites the spool with what is still pending. Called with mu held.
func (s *Settler) compact() error {
	if s.file == nil {
		return nil
	}
	if len(s.pending) == 0 {
		if err := s.file.Truncate(0); err != nil {
			return err
		}
		return s.file.Sync()
	}
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, set := range s.pending {
		line, _ := json.Marshal(set)
		w.Write(append(line, '\n'))
	}
	if err := errors.Join(w.Flush(), f.Sync(), f.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return err
	}
	s.file.Close()
	s.file, err = os.OpenFile(s.path, os.O_APPEND|os.O_WRONLY, 0o600)
	return err
}

// Flush waits for settlements under way, then tries the queue once more.
// What still cannot be written stays in the spool for the next start.
func (s *Settler) Flush(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.retry(ctx)
	if n := s.Pending(); n > 0 {
		return fmt.Errorf("%d settlements still queued (kept in the spool)", n)
	}
	return nil
}

// Close closes the spool file.
func (s *Settler) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file == nil {
		return nil
	}
	return s.file.Close()
}
