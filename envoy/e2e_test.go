package envoy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkoukk/tiktoken-go"
	tiktokenloader "github.com/pkoukk/tiktoken-go-loader"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// gpt-4o-mini in the price table, nano-dollars per token.
const (
	miniIn     = 150
	miniCached = 75
	miniOut    = 600
)

// The seed README's quick-start request.
const seedBody = `{
    "model": "openai/gpt-4o-mini",
    "stream": true,
    "messages": [{"role": "user", "content": "Hello!"}]
  }`

func post(t *testing.T, s *testenv.Stack, path, key, body string, headers map[string]string) *http.Response {
	t.Helper()
	return send(t, s, "POST", path, key, strings.NewReader(body), headers)
}

// send makes a request through Envoy with key (none when empty); the
// response body is closed at cleanup.
func send(t *testing.T, s *testenv.Stack, method, path, key string, body io.Reader, headers map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, s.Envoy.URL()+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("content-type", "application/json")
	}
	if key != "" {
		req.Header.Set("authorization", "Bearer "+key)
	}
	for k, v := range headers {
		if strings.EqualFold(k, "host") {
			req.Host = v // Go sends the Host header from here only
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    string  `json:"code"`
		Param   *string `json:"param"`
	} `json:"error"`
}

func decodeError(t *testing.T, resp *http.Response) apiError {
	t.Helper()
	if ct := resp.Header.Get("content-type"); ct != "application/json" {
		t.Fatalf("error content-type = %q", ct)
	}
	var e apiError
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("error body is not the OpenAI shape: %v", err)
	}
	return e
}

// contentOf reads an SSE chat stream and returns the concatenated content
// and the raw data lines.
func contentOf(t *testing.T, body io.Reader) (string, []string) {
	t.Helper()
	var text strings.Builder
	var lines []string
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		lines = append(lines, line)
		if line == "[DONE]" {
			break
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(line), &chunk); err != nil {
			t.Fatalf("bad chunk %q: %v", line, err)
		}
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	return text.String(), lines
}

func today(user string) string { return billing.BudgetKey(user, billing.Day(time.Now(), time.UTC)) }

// o200k counts tokens the way the reference library does, independently of
// the billing package.
func o200k(t *testing.T, text string) int64 {
	t.Helper()
	tiktoken.SetBpeLoader(tiktokenloader.NewOfflineLoader())
	enc, err := tiktoken.GetEncoding("o200k_base")
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(enc.EncodeOrdinary(text)))
}

var secretShape = regexp.MustCompile(`(?i)\bbearer\s+\S|\bsk-[a-z0-9]|x-api-key\s*[:=]|authorization\s*[:=]`)

func TestUnauthorized(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	for name, key := range map[string]string{"no key": "", "wrong key": "not-the-key", "upstream key": testenv.UpstreamKey} {
		t.Run(name, func(t *testing.T) {
			resp := post(t, s, "/v1/chat/completions", key, seedBody, nil)
			if resp.StatusCode != 401 {
				t.Fatalf("status = %d, want 401", resp.StatusCode)
			}
			e := decodeError(t, resp)
			if e.Error.Type != "authentication_error" || e.Error.Code != "invalid_api_key" || !strings.Contains(e.Error.Message, "gateway operator") {
				t.Fatalf("error = %+v", e.Error)
			}
			// Agent clients redact credential-shaped text before a person
			// reads it; the advice must survive that.
			if m := secretShape.FindString(e.Error.Message); m != "" {
				t.Fatalf("message %q contains %q", e.Error.Message, m)
			}
		})
	}
	if n := len(s.Upstream.Requests()); n != 0 {
		t.Fatalf("upstream received %d requests from unauthenticated clients", n)
	}
}

func TestSeedCurlStreamsThroughEnvoy(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{UpstreamPath: "/api"})
	// The upstream stops after the first word until released: the client
	// can only read that word if it was passed on while the upstream was
	// still streaming.
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody,
		map[string]string{"x-fake-gate": "first", "x-fake-gate-after": "1", "x-fake-split": "7", "x-user-id": "seed"})
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("content-type"), "text/event-stream") {
		t.Fatalf("status %d, content-type %q", resp.StatusCode, resp.Header.Get("content-type"))
	}
	br := bufio.NewReader(resp.Body)
	got := make(chan string, 1)
	go func() {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				got <- "error: " + err.Error()
				return
			}
			if strings.Contains(line, `"content":"Hello!"`) {
				got <- line
				return
			}
		}
	}()
	select {
	case line := <-got:
		if strings.HasPrefix(line, "error") {
			t.Fatal(line)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the first word did not reach the client while the upstream held the stream open")
	}
	s.Upstream.Release("first")
	rest, _ := contentOf(t, br)
	if full := "Hello!" + rest; full != fakellm.Answer(12) {
		t.Fatalf("answer = %q, want %q", full, fakellm.Answer(12))
	}
	// The upstream got the rewritten path under its base path.
	if p := s.Upstream.Requests()[0].Path; p != "/api/v1/chat/completions" {
		t.Fatalf("upstream path = %q", p)
	}
}

func TestUpstreamNeverSeesClientKey(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-api-key": testenv.ClientKey})
	io.Copy(io.Discard, resp.Body)
	reqs := s.Upstream.Requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream got %d requests", len(reqs))
	}
	r := reqs[0]
	if got := r.Headers.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+testenv.UpstreamKey {
		t.Fatalf("upstream authorization = %q", got)
	}
	for name, values := range r.Headers {
		for _, v := range values {
			if strings.Contains(v, testenv.ClientKey) {
				t.Fatalf("client key reached the upstream in %s", name)
			}
		}
	}
	if strings.Contains(r.Body, testenv.ClientKey) {
		t.Fatal("client key in the upstream body")
	}
	// The body was rewritten to ask for usage; its length followed.
	if cl := r.Headers.Get("Content-Length"); cl != strconv.Itoa(len(r.Body)) {
		t.Fatalf("content-length %s for a body of %d bytes", cl, len(r.Body))
	}
	if !strings.Contains(r.Body, `"include_usage":true`) {
		t.Fatalf("usage not requested upstream: %s", r.Body)
	}
	// Keys and prompts never reach the logs.
	secretPrompt := strings.Replace(seedBody, "Hello!", "my-confidential-prompt-text", 1)
	io.Copy(io.Discard, post(t, s, "/v1/chat/completions", testenv.ClientKey, secretPrompt, nil).Body)
	io.Copy(io.Discard, post(t, s, "/v1/chat/completions", "a-wrong-key-value", secretPrompt, nil).Body)
	time.Sleep(200 * time.Millisecond)
	for _, secret := range []string{testenv.ClientKey, testenv.UpstreamKey, "a-wrong-key-value", "my-confidential-prompt-text"} {
		if strings.Contains(s.Sidecar.Log(), secret) || strings.Contains(s.Envoy.AccessLog(), secret) {
			t.Errorf("%q appears in the logs", secret)
		}
	}
}

func TestHealth(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	for _, u := range []string{s.Envoy.URL() + "/health", "http://" + s.Sidecar.AdminAddr + "/healthz", "http://" + s.Sidecar.AdminAddr + "/readyz", "http://" + s.Sidecar.AdminAddr + "/metrics"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d", u, resp.StatusCode)
		}
	}
	// /readyz follows Redis.
	s.Redis.Stop()
	resp, err := http.Get("http://" + s.Sidecar.AdminAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("/readyz with Redis down = %d, want 503", resp.StatusCode)
	}
}

// waitStatus posts the seed request with key until it gets want (key and
// limit changes reach the sidecar within its refresh interval), and fails
// with the last status after 10 s.
func waitStatus(t *testing.T, s *testenv.Stack, key string, want int) {
	t.Helper()
	var got int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		r := post(t, s, "/v1/chat/completions", key, seedBody, nil)
		io.Copy(io.Discard, r.Body)
		if got = r.StatusCode; got == want {
			return
		}
	}
	t.Fatalf("status %d, want %d", got, want)
}

// gatedStream starts the seed request for user; the fake upstream stops
// after `after` words until gate is released. It returns the stream once
// those words have reached the client.
func gatedStream(t *testing.T, s *testenv.Stack, user, gate string, after int) *bufio.Reader {
	t.Helper()
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody,
		map[string]string{"x-user-id": user, "x-fake-gate": gate, "x-fake-gate-after": strconv.Itoa(after)})
	br := bufio.NewReader(resp.Body)
	readWords(t, br, after)
	return br
}

// Envoy reaches a sidecar in its pod over a Unix socket (LISTEN_ADDR and
// EXTPROC_ADDR unix:/path): the same requests are authenticated, streamed
// and billed.
func TestExtProcOverUnixSocket(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{UnixSocket: true})
	if !strings.HasPrefix(s.Sidecar.GRPCAddr, "unix:") {
		t.Fatalf("sidecar on %s", s.Sidecar.GRPCAddr)
	}
	if r := post(t, s, "/v1/chat/completions", "wrong-key", seedBody, nil); r.StatusCode != 401 {
		t.Fatalf("wrong key over the socket: %d", r.StatusCode)
	}
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-user-id": "uds"})
	text, _ := contentOf(t, resp.Body)
	if text != fakellm.Answer(12) {
		t.Fatalf("answer %q", text)
	}
	s.WaitSpent(t, today("uds"), 11*miniIn+12*miniOut)
}

// ENVOY_HEALTH_ADDR serves Envoy's readiness to a kubelet and nothing else
// of the admin interface, which can stop Envoy.
func TestEnvoyHealthListenerServesOnlyReady(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t))
	s := testenv.StartStack(t, testenv.StackOptions{Envoy: envoy.Options{HealthAddr: addr}})
	for _, c := range []struct {
		method, path string
		want         int
	}{{"GET", "/ready", 200}, {"POST", "/ready", 404}, {"POST", "/quitquitquit", 404}, {"GET", "/stats", 404},
		{"POST", "/drain_listeners", 404}, {"GET", "/ready/../config_dump", 404}} {
		req, _ := http.NewRequest(c.method, "http://"+addr+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || (c.want == 200 && !strings.Contains(string(b), "LIVE")) {
			t.Errorf("%s %s = %d %q, want %d", c.method, c.path, resp.StatusCode, b, c.want)
		}
	}
	// Envoy is still up.
	if r := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, nil); r.StatusCode != 200 {
		t.Fatalf("after the probes: %d", r.StatusCode)
	}
}
