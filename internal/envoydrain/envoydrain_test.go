package envoydrain

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// adminStub answers like Envoy's admin interface: it records the POSTs and
// reports active requests from active (the health listener's and the
// admin's own are listed too, and must not count).
type adminStub struct {
	mu     sync.Mutex
	posts  []string
	active atomic.Int64
}

func (a *adminStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == "POST" {
		a.mu.Lock()
		a.posts = append(a.posts, r.URL.RequestURI())
		a.mu.Unlock()
		return
	}
	fmt.Fprintf(w, `{"stats":[{"name":"http.llm_ingress.downstream_rq_active","value":%d},`+
		`{"name":"http.envoy_health.downstream_rq_active","value":1},{"name":"http.admin.downstream_rq_active","value":1}]}`, a.active.Load())
}

func (a *adminStub) calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.posts...)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Envoy is told to fail health checks and drain, is waited for while it
// serves requests, and is ended once it has none, in that order.
func TestDrainWaitsForTheLastRequestThenEndsEnvoy(t *testing.T) {
	stub := &adminStub{}
	stub.active.Store(3)
	srv := httptest.NewServer(stub)
	defer srv.Close()
	go func() {
		time.Sleep(300 * time.Millisecond)
		stub.active.Store(0)
	}()
	start := time.Now()
	Drain(context.Background(), Admin{URL: srv.URL}, 100*time.Millisecond, 20*time.Millisecond, quiet)
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("returned after %s, while Envoy still served requests", took)
	}
	want := []string{"/healthcheck/fail", "/drain_listeners?graceful&skip_exit", "/quitquitquit"}
	if got := stub.calls(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("admin calls %v, want %v", got, want)
	}
}

// At the deadline Drain returns and leaves Envoy running: the pod's grace
// period ends it.
func TestDrainGivesUpAtTheDeadline(t *testing.T) {
	stub := &adminStub{}
	stub.active.Store(1)
	srv := httptest.NewServer(stub)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	Drain(ctx, Admin{URL: srv.URL}, 0, 20*time.Millisecond, quiet)
	for _, c := range stub.calls() {
		if c == "/quitquitquit" {
			t.Fatal("Envoy was ended while it still served a request")
		}
	}
}

// No Envoy answering (gone already, as in a pod whose native sidecars
// stop in order): Drain returns at once.
func TestDrainWithoutEnvoy(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	start := time.Now()
	Drain(context.Background(), Admin{URL: url}, time.Minute, time.Second, quiet)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %s with no Envoy to drain", took)
	}
}
