package budgets

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/loop"
)

// Source keeps the budgets in force: the budgets file (Path, may be
// empty) and the budgets made through the operator API (Defs, may be
// nil), merged into Current.
type Source struct {
	Path    string
	Defs    billing.BudgetDefStore
	Current atomic.Pointer[File]
	Log     *slog.Logger

	mu      sync.Mutex // one refresh at a time: the watch loop and the operator API's
	file    *File
	raw     []byte
	lastAPI map[string]string
}

// Load reads the file (an error if it fails its check: at start, a bad
// file stops the sidecar) and the API's budgets (if the store answers).
func (s *Source) Load(ctx context.Context) error {
	if s.Path != "" {
		f, err := Load(s.Path)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.file, s.raw = f, mustRead(s.Path)
		s.mu.Unlock()
	}
	s.refresh(ctx)
	return nil
}

// Watch re-reads both every interval until ctx ends: changes apply
// without a restart. A file that fails its check leaves the file's
// budgets in force, and says why.
func (s *Source) Watch(ctx context.Context, every time.Duration) {
	loop.Every(ctx, every, func() { s.refresh(ctx) })
}

// Refresh re-reads both now (the operator API, after a change).
func (s *Source) Refresh(ctx context.Context) { s.refresh(ctx) }

func (s *Source) refresh(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	if s.Path != "" {
		raw, err := os.ReadFile(s.Path)
		switch {
		case err != nil:
			s.Log.Error("budgets file not re-read; the budgets in force stay", "err", err)
		case !bytes.Equal(raw, s.raw):
			s.raw = raw
			if f, err := Parse(s.Path, raw); err != nil {
				s.Log.Error("budgets file not reloaded; the budgets in force stay", "err", err)
			} else {
				s.file, changed = f, true
				s.Log.Info("budgets file reloaded", "budgets", len(f.Budgets))
			}
		}
	}
	api := map[string][]byte{}
	if s.Defs != nil {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defs, err := s.Defs.BudgetDefs(rctx)
		cancel()
		if err != nil {
			s.Log.Warn("operator-made budgets not re-read; the budgets in force stay", "err", err)
			defs = nil
			for k, v := range s.lastAPI {
				api[k] = []byte(v)
			}
		}
		for k, v := range defs {
			api[k] = v
		}
	}
	if !changed && s.Current.Load() != nil && sameDefs(api, s.lastAPI) {
		return
	}
	s.lastAPI = map[string]string{}
	for k, v := range api {
		s.lastAPI[k] = string(v)
	}
	s.Current.Store(Merge(s.file, api, func(name string, err error) {
		s.Log.Error("operator-made budget left out", "budget", name, "err", err)
	}))
}

func sameDefs(a map[string][]byte, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != string(v) {
			return false
		}
	}
	return true
}

func mustRead(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}
