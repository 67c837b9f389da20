package budgets

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/aifirewall/aifirewall/internal/loop"
)

// Watch re-reads the budgets file at path every interval until ctx ends
// and swaps cur when its content changed and checks out: changes apply
// without a restart. A file that fails its check leaves the budgets in
// force, and says why.
func Watch(ctx context.Context, path string, every time.Duration, cur *atomic.Pointer[File], log *slog.Logger) {
	last, _ := os.ReadFile(path)
	loop.Every(ctx, every, func() {
		raw, err := os.ReadFile(path)
		if err != nil {
			log.Error("budgets file not re-read; the budgets in force stay", "err", err)
			return
		}
		if bytes.Equal(raw, last) {
			return
		}
		last = raw
		f, err := Parse(path, raw)
		if err != nil {
			log.Error("budgets file not reloaded; the budgets in force stay", "err", err)
			return
		}
		cur.Store(f)
		log.Info("budgets file reloaded", "budgets", len(f.Budgets))
	})
}
