package envoy_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

// seedPromptTokens is the chat formula for [{"role":"user","content":"Hello!"}]:
// 3 (reply priming) + 3 (message) + tokens("user") + tokens("Hello!").
func seedPromptTokens(t *testing.T) int64 { return 3 + 3 + o200k(t, "user") + o200k(t, "Hello!") }

func TestSpendWithReportedUsage(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	cases := []struct {
		name    string
		headers map[string]string
		body    string
		want    int64
	}{
		{"stream", map[string]string{"x-fake-prompt-tokens": "11", "x-fake-words": "12"}, seedBody,
			11*miniIn + 12*miniOut},
		{"stream with cache", map[string]string{"x-fake-prompt-tokens": "1000", "x-fake-cached-tokens": "600", "x-fake-words": "7", "x-fake-split": "5"}, seedBody,
			400*miniIn + 600*miniCached + 7*miniOut},
		{"json", map[string]string{"x-fake-prompt-tokens": "20", "x-fake-words": "30"}, strings.Replace(seedBody, `"stream": true`, `"stream": false`, 1),
			20*miniIn + 30*miniOut},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			user := "usage-" + strings.ReplaceAll(c.name, " ", "-")
			c.headers["x-user-id"] = user
			resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, c.body, c.headers)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			io.Copy(io.Discard, resp.Body)
			s.WaitSpent(t, today(user), c.want)
		})
	}
}

func TestSpendWithoutUsageFallsBackToCounting(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody,
		map[string]string{"x-fake-usage": "off", "x-fake-words": "25", "x-fake-split": "3", "x-user-id": "nousage"})
	text, _ := contentOf(t, resp.Body)
	if text != fakellm.Answer(25) {
		t.Fatalf("answer = %q", text)
	}
	want := seedPromptTokens(t)*miniIn + o200k(t, fakellm.Answer(25))*miniOut
	s.WaitSpent(t, today("nousage"), want)
}

func TestClientDisconnectIsBilled(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	// The upstream sends five words, then waits: the client reads them and
	// hangs up while the stream is open.
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody,
		map[string]string{"x-fake-gate": "hangup", "x-fake-gate-after": "5", "x-fake-words": "40", "x-user-id": "leaver"})
	br := bufio.NewReader(resp.Body)
	var text strings.Builder
	for text.String() != fakellm.Answer(5) {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended early with %q: %v", text.String(), err)
		}
		if i := strings.Index(line, `"content":"`); i >= 0 {
			word := line[i+len(`"content":"`):]
			text.WriteString(word[:strings.IndexByte(word, '"')])
		}
	}
	resp.Body.Close() // the client goes away mid-stream
	defer s.Upstream.Release("hangup")
	want := seedPromptTokens(t)*miniIn + o200k(t, fakellm.Answer(5))*miniOut
	s.WaitSpent(t, today("leaver"), want)
}

func TestBudgetExhaustedGets402(t *testing.T) {
	// $0.000005 = 5000 nano-dollars: the first request (8850) passes the
	// gate, since nothing is spent yet, and uses the budget up.
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "0.000005", Env: []string{"STREAM_CUTOFF=false"}}) // one request past the limit
	hdr := map[string]string{"x-user-id": "spender"}
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, hdr)
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	for _, h := range []string{"x-aifirewall-budget-limit", "x-aifirewall-budget-remaining", "x-aifirewall-budget-reset"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("response lacks %s", h)
		}
	}
	s.WaitSpent(t, today("spender"), 11*miniIn+12*miniOut)

	before := time.Now().UTC()
	resp = post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, hdr)
	if resp.StatusCode != 402 {
		t.Fatalf("over-budget request: status %d, want 402", resp.StatusCode)
	}
	e := decodeError(t, resp)
	if e.Error.Type != "budget_exceeded" || e.Error.Code != "budget_exceeded" {
		t.Fatalf("error = %+v", e.Error)
	}
	for _, want := range []string{"$0.000005", "$0.00000885", "resets at"} {
		if !strings.Contains(e.Error.Message, want) {
			t.Errorf("message %q lacks %q", e.Error.Message, want)
		}
	}
	retry, err := strconv.Atoi(resp.Header.Get("retry-after"))
	midnight := time.Date(before.Year(), before.Month(), before.Day()+1, 0, 0, 0, 0, time.UTC)
	if untilMidnight := int(midnight.Sub(before).Seconds()); err != nil || retry < untilMidnight-5 || retry > untilMidnight+5 {
		t.Fatalf("retry-after = %q, want about %d", resp.Header.Get("retry-after"), untilMidnight)
	}
	// A 402 carries the budget headers too, so a client can show when it
	// may go on.
	if h := resp.Header; h.Get("x-aifirewall-budget-limit") != "0.000005" || h.Get("x-aifirewall-budget-remaining") != "0" ||
		h.Get("x-aifirewall-budget-reset") != midnight.Format(time.RFC3339) {
		t.Errorf("402 budget headers: limit %q remaining %q reset %q", h.Get("x-aifirewall-budget-limit"),
			h.Get("x-aifirewall-budget-remaining"), h.Get("x-aifirewall-budget-reset"))
	}
	if n := len(s.Upstream.Requests()); n != 1 {
		t.Fatalf("upstream received %d requests, want 1: the refused one must not be forwarded", n)
	}
	// Another user still has a budget.
	other := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-user-id": "frugal"})
	if other.StatusCode != 200 {
		t.Fatalf("other user: %d", other.StatusCode)
	}
}

func TestOpenAISDKStreamAndUsageStripping(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	client := openai.NewClient(option.WithBaseURL(s.Envoy.URL()+"/v1"), option.WithAPIKey(testenv.ClientKey),
		option.WithHeader("x-fake-split", "9"), option.WithHeader("x-user-id", "sdk"))
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello!")},
	})
	var text strings.Builder
	chunks := 0
	for stream.Next() {
		chunks++
		ch := stream.Current()
		if len(ch.Choices) == 0 {
			t.Fatalf("client received a usage-only chunk it did not ask for: %s", ch.RawJSON())
		}
		text.WriteString(ch.Choices[0].Delta.Content)
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != fakellm.Answer(12) || chunks != 14 {
		t.Fatalf("answer %q in %d chunks", text.String(), chunks)
	}
	s.WaitSpent(t, today("sdk"), 11*miniIn+12*miniOut)
}

// What the client receives through the firewall is byte for byte what the
// upstream sends a client that did not ask for usage.
func TestInjectedUsageIsInvisible(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	direct := func() []byte {
		u := s.Upstream
		rec := &recorder{header: http.Header{}}
		req, _ := http.NewRequest("POST", "/v1/chat/completions", strings.NewReader(seedBody))
		u.ServeHTTP(rec, req)
		return rec.body.Bytes()
	}()
	for _, split := range []string{"0", "1", "5", "64"} {
		resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-fake-split": split})
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, direct) {
			t.Fatalf("split %s: client got\n%s\nwant\n%s", split, got, direct)
		}
	}
	// A client that asks for usage keeps it.
	asked := strings.Replace(seedBody, `"stream": true`, `"stream": true, "stream_options": {"include_usage": true}`, 1)
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, asked, nil)
	got, _ := io.ReadAll(resp.Body)
	if !bytes.Contains(got, []byte(`"choices":[],`)) || !bytes.Contains(got, []byte(`"usage":{`)) {
		t.Fatalf("usage chunk missing for a client that asked for it:\n%s", got)
	}
}

type recorder struct {
	header http.Header
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(int)             {}

func TestSigtermFinishesStreamAndBills(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	br := gatedStream(t, s, "draining", "term", 2) // "Hello! I"
	exited := make(chan error, 1)
	go func() { exited <- s.Sidecar.Terminate(30 * time.Second) }()
	time.Sleep(300 * time.Millisecond) // SIGTERM lands while the stream is open
	s.Upstream.Release("term")
	rest, _ := contentOf(t, br)
	if "Hello! I"+rest != fakellm.Answer(12) {
		t.Fatalf("stream cut by shutdown: %q", rest)
	}
	if err := <-exited; err != nil {
		t.Fatalf("sidecar exit: %v\n%s", err, s.Sidecar.Log())
	}
	s.WaitSpent(t, today("draining"), 11*miniIn+12*miniOut)
}

// A 36 KB agent turn (system prompt, 11 tools, a tool call and its reply)
// whose client asked for usage itself: the stream reaches it byte for byte
// as the upstream sent it, usage chunk included, and is billed from it.
func TestAgentRequestStreamsUntouched(t *testing.T) {
	body, err := os.ReadFile(filepath.Join("..", "processor", "provider", "testdata", "agent_request.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := testenv.StartStack(t, testenv.StackOptions{})
	hdr := map[string]string{"x-fake-prompt-tokens": "9000", "x-fake-words": "20"}
	direct := func() []byte {
		rec := &recorder{header: http.Header{}}
		req, _ := http.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		s.Upstream.ServeHTTP(rec, req)
		return rec.body.Bytes()
	}()
	for i, split := range []string{"0", "7", "64"} {
		user := fmt.Sprintf("agent-%d", i)
		h := map[string]string{"x-fake-split": split, "x-user-id": user}
		for k, v := range hdr {
			h[k] = v
		}
		resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, string(body), h)
		got, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("split %s: %d %v", split, resp.StatusCode, err)
		}
		if !bytes.Equal(got, direct) || !bytes.Contains(got, []byte(`"usage":{`)) {
			t.Fatalf("split %s: client got\n%s\nwant\n%s", split, got, direct)
		}
		s.WaitSpent(t, today(user), 9000*miniIn+20*miniOut)
	}
	forwarded := s.Upstream.Requests()
	if last := forwarded[len(forwarded)-1].Body; last != string(body) {
		t.Fatal("the upstream did not receive the agent's body as sent")
	}
}
