package envoy_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

// heldStream opens a streamed chat request that the fake provider holds
// open after its first word, at gate; it returns the status and, for a 200,
// a reader positioned after that word and the body to close.
func heldStream(client *http.Client, s *testenv.Stack, user, gate string) (int, *bufio.Reader, io.Closer, error) {
	req, _ := http.NewRequest("POST", s.Envoy.URL()+"/v1/chat/completions", strings.NewReader(cappedBody))
	req.Header.Set("authorization", "Bearer "+testenv.ClientKey)
	req.Header.Set("content-type", "application/json")
	req.Header.Set("x-user-id", user)
	req.Header.Set("x-fake-gate", gate)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	if resp.StatusCode != 200 {
		// The body and Envoy's flags say who refused it, for the failure.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		return resp.StatusCode, nil, nil, fmt.Errorf("%s (x-envoy-response-flags %q)", b, resp.Header.Get("x-envoy-response-flags"))
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			resp.Body.Close()
			return 0, nil, nil, fmt.Errorf("stream ended before its first word: %w", err)
		}
		if strings.Contains(line, `"content":"`) && !strings.Contains(line, `"content":""`) {
			return 200, br, resp.Body, nil
		}
	}
}

// More streams than Envoy's default circuit breakers allow (1,024 per
// cluster) are open at once through one Envoy and one sidecar, each held by
// the provider: all are answered and each is billed exactly once.
func TestMoreThanEnvoysDefaultOpenStreams(t *testing.T) {
	const n = 1100
	// 1,100 admissions arrive at once: under the race detector on a busy
	// machine some wait over a second for one of go-redis's connections,
	// which is not what this test is about.
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "1000", Env: []string{"LOG_LEVEL=warn", "REDIS_TIMEOUT=5s"}})
	// A stream Envoy queued instead would fail at the timeout, not hang.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}, Timeout: time.Minute}
	t.Cleanup(client.CloseIdleConnections)
	type held struct {
		br *bufio.Reader
		c  io.Closer
	}
	var (
		mu     sync.Mutex
		open   []held
		failed []string
		wg     sync.WaitGroup
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, br, c, err := heldStream(client, s, "many-streams", "held")
			mu.Lock()
			defer mu.Unlock()
			if err != nil || st != 200 {
				failed = append(failed, fmt.Sprintf("stream %d: %d %v", i, st, err))
				return
			}
			open = append(open, held{br, c})
		}()
	}
	wg.Wait()
	s.Upstream.Release("held")
	for _, h := range open {
		io.Copy(io.Discard, h.br)
		h.c.Close()
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d streams failed, e.g. %s", len(failed), n, failed[0])
	}
	// Each: 11 prompt tokens and 12 words at gpt-4o-mini.
	s.WaitSpent(t, today("many-streams"), n*(11*miniIn+12*miniOut))
}

// Past ENVOY_MAX_STREAMS, with an eighth more (at least 16) waiting for a
// provider connection, the circuit breaker answers at once, in the error
// shape, with Retry-After, and nothing is billed for it; when the held
// streams end, the waiting ones go through and are billed.
func TestCircuitBreakerAnswersAtCapacity(t *testing.T) {
	const limit, waiting = 20, 16
	s := testenv.StartStack(t, testenv.StackOptions{Envoy: envoy.Options{Limits: envoy.Limits{MaxStreams: limit}}})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4 * limit}}
	t.Cleanup(client.CloseIdleConnections)
	var closers []io.Closer
	var readers []*bufio.Reader
	for range limit {
		st, br, c, err := heldStream(client, s, "at-capacity", "full")
		if err != nil || st != 200 {
			t.Fatalf("a stream within the limit: %d %v", st, err)
		}
		closers, readers = append(closers, c), append(readers, br)
	}
	// These wait for a provider connection.
	var wg sync.WaitGroup
	statuses := make(chan int, waiting)
	for range waiting {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, br, c, err := heldStream(client, s, "waited", "later")
			if err == nil && st == 200 {
				io.Copy(io.Discard, br)
				c.Close()
			}
			statuses <- st
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); envoyStat(t, s, "cluster.provider_default.upstream_rq_pending_active") != waiting; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v requests wait for a connection, want %d", envoyStat(t, s, "cluster.provider_default.upstream_rq_pending_active"), waiting)
		}
	}
	req, _ := http.NewRequest("POST", s.Envoy.URL()+"/v1/chat/completions", strings.NewReader(cappedBody))
	req.Header.Set("authorization", "Bearer "+testenv.ClientKey)
	req.Header.Set("content-type", "application/json")
	req.Header.Set("x-user-id", "one-too-many")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || resp.Header.Get("retry-after") == "" {
		t.Fatalf("one stream past the limit: %d, retry-after %q", resp.StatusCode, resp.Header.Get("retry-after"))
	}
	if er := decodeError(t, resp); er.Error.Code != "gateway_at_capacity" {
		t.Fatalf("one stream past the limit: %+v", er.Error)
	}
	s.Upstream.Release("full")
	s.Upstream.Release("later")
	for i, br := range readers {
		io.Copy(io.Discard, br)
		closers[i].Close()
	}
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != 200 {
			t.Errorf("a waiting request got %d", st)
		}
	}
	s.WaitSpent(t, today("at-capacity"), limit*(11*miniIn+12*miniOut))
	s.WaitSpent(t, today("waited"), waiting*(11*miniIn+12*miniOut))
	if got := s.Spent(t, today("one-too-many")); got != 0 {
		t.Errorf("the refused request was billed %d", got)
	}
}

// envoyStat reads one counter or gauge from Envoy's admin interface.
func envoyStat(t *testing.T, s *testenv.Stack, name string) int {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stats?filter=^%s$", s.Envoy.AdminPort, name))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v int
	if _, err := fmt.Sscanf(strings.TrimPrefix(strings.TrimSpace(string(b)), name+": "), "%d", &v); err != nil {
		t.Fatalf("stat %s: %q", name, b)
	}
	return v
}

// The limits, a heap bound included, make a configuration Envoy accepts:
// every cluster's breakers, the overload manager's connection monitor, and
// the heap monitor with its two actions.
func TestLimitsConfigValidates(t *testing.T) {
	o := envoy.Options{ListenAddr: "127.0.0.1:8000", AdminAddr: "127.0.0.1:9901", ExtProcAddr: "127.0.0.1:50051",
		UpstreamURL: "https://api.openai.com", Limits: envoy.Limits{MaxStreams: 500, MaxDownstreamConnections: 600, MaxHeapBytes: 256 << 20}}
	y, err := envoy.YAML(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"max_active_downstream_connections: \"600\"", "max_heap_size_bytes: \"268435456\"",
		"envoy.overload_actions.shrink_heap", "envoy.overload_actions.stop_accepting_requests", "max_requests: 500", "max_requests: 1000", "max_pending_requests: 62"} {
		if !strings.Contains(string(y), want) {
			t.Errorf("the configuration lacks %q", want)
		}
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	os.WriteFile(path, y, 0o600)
	if b, err := exec.Command(testenv.EnvoyBinary(t), "--mode", "validate", "-c", path, "--disable-hot-restart").CombinedOutput(); err != nil {
		t.Fatalf("envoy rejects the limits: %v\n%s", err, b)
	}
}
