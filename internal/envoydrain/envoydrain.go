// Package envoydrain takes the Envoy in front of a stopping sidecar out of
// service in the order that fails no request: Envoy fails its health
// checks and drains its listeners (clients are told to go elsewhere:
// Connection: close on HTTP/1.1, GOAWAY on HTTP/2, while new connections
// are still taken), the streams it carries finish, and only then does
// Envoy exit, before the sidecar stops answering it. This is what Envoy
// Gateway's shutdown manager does for its proxies, through the same admin
// endpoints.
package envoydrain

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Admin is Envoy's admin interface.
type Admin struct {
	URL    string // e.g. http://127.0.0.1:9901
	Client *http.Client
}

func (a Admin) post(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimSuffix(a.URL, "/")+path, nil)
	if err != nil {
		return err
	}
	resp, err := a.client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("POST %s: %s", path, resp.Status)
	}
	return nil
}

func (a Admin) client() *http.Client {
	if a.Client != nil {
		return a.Client
	}
	return &http.Client{Timeout: 2 * time.Second}
}

// ActiveRequests is how many requests Envoy's HTTP listeners are serving,
// its own health listener left out.
func (a Admin) ActiveRequests(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(a.URL, "/")+`/stats?format=json&filter=^http\..*\.downstream_rq_active$`, nil)
	if err != nil {
		return 0, err
	}
	resp, err := a.client().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("GET /stats: %s", resp.Status)
	}
	var stats struct {
		Stats []struct {
			Name  string `json:"name"`
			Value *int64 `json:"value"`
		} `json:"stats"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&stats); err != nil {
		return 0, fmt.Errorf("GET /stats: %w", err)
	}
	var n int64
	for _, s := range stats.Stats {
		if s.Value != nil && !strings.HasPrefix(s.Name, "http.envoy_health.") && !strings.HasPrefix(s.Name, "http.admin.") {
			n += *s.Value
		}
	}
	return n, nil
}

// Drain takes Envoy out of service and returns once it has no request left
// (then tells it to exit), Envoy is gone, or ctx ends. It waits at least
// minDrain first, for load balancers to see the failing health check and
// stop sending new connections. poll is how often it looks.
func Drain(ctx context.Context, a Admin, minDrain, poll time.Duration, log *slog.Logger) {
	if err := a.post(ctx, "/healthcheck/fail"); err != nil {
		log.Info("envoy not draining: its admin interface does not answer", "err", err)
		return
	}
	// skip_exit: the streams in flight finish; this package ends Envoy.
	if err := a.post(ctx, "/drain_listeners?graceful&skip_exit"); err != nil {
		log.Warn("envoy: drain_listeners failed; its health check fails still", "err", err)
	}
	log.Info("envoy draining", "min_drain", minDrain.String())
	select {
	case <-ctx.Done():
		return
	case <-time.After(minDrain):
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		n, err := a.ActiveRequests(ctx)
		if err != nil {
			log.Info("envoy drained: its admin interface is gone", "err", err)
			return
		}
		if n == 0 {
			if err := a.post(ctx, "/quitquitquit"); err != nil {
				log.Warn("envoy drained but would not exit", "err", err)
			}
			log.Info("envoy drained and told to exit")
			return
		}
		select {
		case <-ctx.Done():
			log.Warn("envoy still serving requests at the shutdown deadline", "active", n)
			return
		case <-t.C:
		}
	}
}
