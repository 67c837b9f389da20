// Package loop holds the one periodic loop the sidecar's background work
// (key reloads, reservation renewals) shares.
package loop

import (
	"context"
	"time"
)

// Every runs fn every interval until ctx ends.
func Every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
