package envoy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

// Each request: 11 prompt + 12 completion tokens of gpt-4o-mini = 8850
// nano-dollars. max_tokens 20 makes its reservation 9*150 + 20*600 = 13350,
// above what it will cost, as an estimate should be.
const (
	reqCost     = 11*miniIn + 12*miniOut
	cappedBody  = `{"model":"gpt-4o-mini","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"Hello!"}]}`
	reservation = 9*miniIn + 20*miniOut
)

type budgetReport struct {
	User          string `json:"user"`
	LimitNanos    int64  `json:"limit_nanos"`
	SpentNanos    int64  `json:"spent_nanos"`
	ReservedNanos int64  `json:"reserved_nanos"`
	RemainingUSD  string `json:"remaining_usd"`
	Reset         string `json:"reset"`
}

func getBudget(t *testing.T, s *testenv.Stack, key string, headers map[string]string) (int, budgetReport) {
	t.Helper()
	resp := send(t, s, "GET", "/v1/budget", key, nil, headers)
	var b budgetReport
	if resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, b
}

// 100 concurrent requests for one user whose budget covers a few: the
// total billed stays within the limit plus one request's cost, and no
// reservation is left behind.
func TestConcurrentRequestsCannotOverspend(t *testing.T) {
	const limit = 50_000                                                                                     // $0.00005: five or six requests' worth
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "0.00005", Env: []string{"STREAM_CUTOFF=false"}}) // the estimate rule
	codes := concurrentChats(t, s, 100, func(int) map[string]string {
		return map[string]string{"authorization": "Bearer " + testenv.ClientKey, "x-user-id": "swarm"}
	})
	if codes[200] < 3 || codes[402] == 0 || codes[200]+codes[402] != 100 {
		t.Fatalf("status counts %v", codes)
	}
	var b budgetReport
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, b = getBudget(t, s, testenv.ClientKey, map[string]string{"x-user-id": "swarm"}); b.ReservedNanos == 0 && b.SpentNanos == int64(codes[200])*reqCost {
			break
		}
	}
	if b.ReservedNanos != 0 {
		t.Fatalf("reservations left open: %d nanos", b.ReservedNanos)
	}
	if b.SpentNanos != int64(codes[200])*reqCost {
		t.Fatalf("spent %d for %d answered requests of %d", b.SpentNanos, codes[200], reqCost)
	}
	if b.SpentNanos > limit+reqCost {
		t.Fatalf("overspent: %d billed against a %d limit (largest request %d)", b.SpentNanos, limit, reqCost)
	}
	t.Logf("%v; billed %d of %d", codes, b.SpentNanos, limit)
}

// A sidecar killed with reservations open leaves them in Redis; after
// RESERVATION_TTL the user's full remaining budget is available again.
func TestCrashedSidecarReservationsExpire(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "0.00004", Env: []string{"RESERVATION_TTL=3s", "STREAM_CUTOFF=false"}})
	hdr := map[string]string{"x-user-id": "crashy", "x-fake-gate": "hold", "x-fake-gate-after": "1"}
	var open []*http.Response
	for range 3 { // 3 * 13350 >= 40000: the budget is fully reserved
		resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, cappedBody, hdr)
		if resp.StatusCode != 200 {
			t.Fatalf("stream refused: %d", resp.StatusCode)
		}
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		open = append(open, resp)
	}
	if resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, cappedBody, map[string]string{"x-user-id": "crashy"}); resp.StatusCode != 402 {
		t.Fatalf("fourth request with the budget reserved: %d, want 402", resp.StatusCode)
	}
	s.Sidecar.Kill()
	crashed := time.Now()
	// The crash leaves the reservations in Redis, whatever the restart takes.
	if n, err := s.RDB.HLen(t.Context(), "reserved:{crashy}:"+billing.Day(time.Now(), time.UTC)).Result(); err != nil || n != 3 {
		t.Fatalf("reservations right after the crash: %d (%v), want 3", n, err)
	}
	s.Upstream.Release("hold")
	for _, r := range open {
		r.Body.Close()
	}
	s.Sidecar.Start()
	if _, b := getBudget(t, s, testenv.ClientKey, map[string]string{"x-user-id": "crashy"}); b.ReservedNanos != 3*reservation {
		// Reservations may have expired already on a slow machine (the
		// sidecar's restart loads both encodings): renewed every third of
		// the TTL, they last at least 2 s after the crash, and only their
		// presence within that is checked here.
		if time.Since(crashed) < 2*time.Second {
			t.Fatalf("reserved after restart = %d, want %d", b.ReservedNanos, 3*reservation)
		}
	}
	time.Sleep(time.Until(crashed.Add(3*time.Second + 200*time.Millisecond)))
	_, b := getBudget(t, s, testenv.ClientKey, map[string]string{"x-user-id": "crashy"})
	if b.ReservedNanos != 0 || b.SpentNanos != 0 || b.RemainingUSD != "0.00004" {
		t.Fatalf("after the TTL: %+v", b)
	}
	if resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, cappedBody, map[string]string{"x-user-id": "crashy"}); resp.StatusCode != 200 {
		t.Fatalf("request after the TTL: %d", resp.StatusCode)
	}
}

func TestBudgetEndpointAndAccessLog(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-user-id": "looker"})
	io.Copy(io.Discard, resp.Body)
	s.WaitSpent(t, today("looker"), reqCost)
	code, b := getBudget(t, s, testenv.ClientKey, map[string]string{"x-user-id": "looker"})
	if code != 200 || b.User != "looker" || b.SpentNanos != reqCost || b.LimitNanos != 5*int64(billing.NanosPerUSD) || b.Reset == "" {
		t.Fatalf("budget = %d %+v", code, b)
	}
	if code, _ := getBudget(t, s, "wrong", nil); code != 401 {
		t.Fatalf("budget without a valid key: %d", code)
	}
	if n := len(s.Upstream.Requests()); n != 1 {
		t.Fatalf("upstream saw %d requests: /v1/budget must never be forwarded", n)
	}
	// Envoy's access log carries the sidecar's dynamic metadata.
	var entry map[string]any
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && entry == nil; time.Sleep(50 * time.Millisecond) {
		for _, line := range strings.Split(s.Envoy.AccessLog(), "\n") {
			if strings.Contains(line, `"path":"/v1/chat/completions"`) {
				json.Unmarshal([]byte(line), &entry)
			}
		}
	}
	if entry == nil {
		t.Fatalf("no access log line:\n%s", s.Envoy.AccessLog())
	}
	want := map[string]any{"aifirewall_user": "looker", "aifirewall_model": "openai/gpt-4o-mini",
		"aifirewall_decision": "allowed", "aifirewall_cost_usd": "0.00000885", "aifirewall_completion_tokens": float64(12)}
	for k, v := range want {
		if entry[k] != v {
			t.Errorf("access log %s = %v, want %v (line %v)", k, entry[k], v, entry)
		}
	}
}

func TestUnknownPathDeniedAndModelsForwarded(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	resp := post(t, s, "/v1/files", testenv.ClientKey, `{}`, nil)
	if resp.StatusCode != 404 || decodeError(t, resp).Error.Code != "unknown_url" {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
	req, _ := http.NewRequestWithContext(context.Background(), "GET", s.Envoy.URL()+"/v1/models", nil)
	req.Header.Set("authorization", "Bearer "+testenv.ClientKey)
	mresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if mresp.StatusCode != 200 || !strings.Contains(string(body), "gpt-4o-mini") {
		t.Fatalf("/v1/models: %d %s", mresp.StatusCode, body)
	}
	if fmt.Sprint(len(s.Upstream.Requests())) != "1" {
		t.Fatal("the unknown path reached the upstream")
	}
}

// concurrentChats sends n streamed chat requests at once (each answer
// 20 ms slow), with headers(i) on the i-th, and counts the statuses.
func concurrentChats(t *testing.T, s *testenv.Stack, n int, headers func(i int) map[string]string) map[int]int {
	t.Helper()
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", s.Envoy.URL()+"/v1/chat/completions", strings.NewReader(cappedBody))
			req.Header.Set("content-type", "application/json")
			req.Header.Set("x-fake-delay-ms", "20")
			for k, v := range headers(i) {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return codes
}
