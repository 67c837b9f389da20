package envoy_test

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testenv"
)

// readWords reads a chat stream until n words arrived.
func readWords(t *testing.T, br *bufio.Reader, n int) {
	t.Helper()
	for got := 0; got < n; {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended after %d words: %v", got, err)
		}
		if strings.Contains(line, `"content":"`) && !strings.Contains(line, `"content":""`) {
			got++
		}
	}
}

// FAIL_MODE=closed (the default): with Redis down a new request gets a 503
// in the OpenAI shape after at most REDIS_TIMEOUT, and nothing is forwarded.
func TestRedisDownFailsClosed(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{"REDIS_TIMEOUT=300ms"}})
	s.Redis.Stop()
	client := &http.Client{Timeout: 10 * time.Second} // a hang fails the test
	req, _ := http.NewRequest("POST", s.Envoy.URL()+"/v1/chat/completions", strings.NewReader(seedBody))
	req.Header.Set("authorization", "Bearer "+testenv.ClientKey)
	req.Header.Set("content-type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("no answer with Redis down: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The sidecar's own answer, not rewritten by Envoy's local-reply mapper.
	if e := decodeError(t, resp).Error; e.Code != "service_unavailable" || !strings.Contains(e.Message, "budget store") {
		t.Fatalf("error %+v", e)
	}
	if n := len(s.Upstream.Requests()); n != 0 {
		t.Fatalf("forwarded %d requests without a budget check", n)
	}
}

// FAIL_MODE=open: requests pass while Redis is down and are billed once it
// is back, from the spool.
func TestRedisDownFailOpenBillsLater(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{"REDIS_TIMEOUT=300ms", "FAIL_MODE=open"}})
	s.Redis.Stop()
	for range 2 {
		resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-user-id": "open"})
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("fail-open request: %d", resp.StatusCode)
		}
	}
	s.Redis.Start() // empty: the two settlements come from the spool
	s.WaitSpent(t, today("open"), 2*reqCost)
}

// Redis dies while a stream is open; the stream finishes, its settlement
// is spooled; the sidecar is restarted before Redis returns and replays
// the spool: the request is billed exactly once.
func TestRedisDiesMidStreamThenSidecarRestarts(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{"REDIS_TIMEOUT=300ms"}})
	br := gatedStream(t, s, "spooled", "g", 3)
	s.Redis.Stop()
	s.Upstream.Release("g")
	if text, _ := contentOf(t, br); !strings.HasSuffix(text, "answer so that") {
		t.Fatalf("stream did not finish: %q", text)
	}
	// Graceful stop with Redis still down: the settlement stays spooled.
	if err := s.Sidecar.Terminate(30 * time.Second); err != nil {
		t.Fatalf("sidecar exit: %v", err)
	}
	if !strings.Contains(s.Sidecar.Log(), "settlement queued") {
		t.Fatalf("settlement was not queued:\n%s", s.Sidecar.Log())
	}
	s.Redis.Start()
	s.Sidecar.Start() // replays the spool
	s.WaitSpent(t, today("spooled"), reqCost)
}

// The sidecar is killed mid-stream. With failure_mode_allow: false Envoy
// cannot pass the rest of the answer unmetered, so the client's stream is
// cut off; the reservation expires after RESERVATION_TTL, nothing is
// billed twice, and requests after the restart work.
func TestSidecarKilledMidStream(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{"RESERVATION_TTL=2s"}})
	br := gatedStream(t, s, "orphan", "k", 2)
	s.Sidecar.Kill()
	s.Upstream.Release("k")
	rest, err := io.ReadAll(br)
	if err == nil && strings.Contains(string(rest), "[DONE]") {
		t.Fatalf("the stream went on unmetered after the sidecar died:\n%s", rest)
	}
	t.Logf("client saw: %d more bytes, then %v", len(rest), err)
	s.Sidecar.Start()
	time.Sleep(2200 * time.Millisecond)
	_, b := getBudget(t, s, testenv.ClientKey, map[string]string{"x-user-id": "orphan"})
	if b.ReservedNanos != 0 || b.SpentNanos != 0 {
		t.Fatalf("after the TTL: %+v", b)
	}
	next := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-user-id": "orphan"})
	io.Copy(io.Discard, next.Body)
	if next.StatusCode != 200 {
		t.Fatalf("request after restart: %d", next.StatusCode)
	}
	s.WaitSpent(t, today("orphan"), reqCost)
}
