package processor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpcmd "google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/processor/provider"
)

var (
	tkOnce sync.Once
	tk     *billing.Tokenizer
)

func tokenizer(t testing.TB) *billing.Tokenizer {
	tkOnce.Do(func() {
		var err error
		if tk, err = billing.NewTokenizer(); err != nil {
			t.Fatal(err)
		}
	})
	return tk
}

type harness struct {
	srv    *Server
	store  billing.Store
	client extprocv3.ExternalProcessorClient
}

// newHarness serves a processor on an in-memory listener and returns a
// client of it, as Envoy would be.
func newHarness(t testing.TB, store billing.Store) *harness {
	t.Helper()
	return newHarnessWith(t, store, Config{Auth: identity.NewSharedKey("k"), Upstream: provider.OpenAI, UpstreamKey: "up", DailyLimit: billing.NanosPerUSD})
}

// newHarnessWith serves a processor configured with cfg.
func newHarnessWith(t testing.TB, store billing.Store, cfg Config) *harness {
	t.Helper()
	prices, err := billing.LoadPrices("", billing.Price{Input: 1000, Output: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if store == nil {
		store = billing.NewMemStore()
	}
	srv := New(cfg, store, prices, tokenizer(t), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(gs, srv)
	go gs.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///buf", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); gs.Stop() })
	return &harness{srv: srv, store: store, client: extprocv3.NewExternalProcessorClient(conn)}
}

// exchange is one request's ext_proc stream.
type exchange struct {
	t      testing.TB
	stream extprocv3.ExternalProcessor_ProcessClient
	cancel context.CancelFunc
}

func (h *harness) open(t testing.TB) *exchange {
	return h.openWith(t, nil)
}

// openWith opens a stream carrying gRPC metadata md, as Envoy sends a
// route's grpc_initial_metadata.
func (h *harness) openWith(t testing.TB, md grpcmd.MD) *exchange {
	ctx, cancel := context.WithCancel(context.Background())
	if md != nil {
		ctx = grpcmd.NewOutgoingContext(ctx, md)
	}
	s, err := h.client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return &exchange{t: t, stream: s, cancel: cancel}
}

func (x *exchange) send(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	x.t.Helper()
	if err := x.stream.Send(req); err != nil {
		x.t.Fatal(err)
	}
	resp, err := x.stream.Recv()
	if err != nil {
		x.t.Fatal(err)
	}
	return resp
}

func headersMsg(end bool, kv ...string) *extprocv3.HttpHeaders {
	h := &corev3.HeaderMap{}
	for i := 0; i < len(kv); i += 2 {
		h.Headers = append(h.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.HttpHeaders{Headers: h, EndOfStream: end}
}

func (x *exchange) requestHeaders(kv ...string) *extprocv3.ProcessingResponse {
	return x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: headersMsg(false, kv...)}})
}

func (x *exchange) requestBody(body string) *extprocv3.ProcessingResponse {
	return x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}})
}

func (x *exchange) responseHeaders(kv ...string) *extprocv3.ProcessingResponse {
	return x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: headersMsg(false, kv...)}})
}

// responseChunk sends a body chunk and returns what the client gets of it.
func (x *exchange) responseChunk(chunk string, eos bool) string {
	x.t.Helper()
	resp := x.send(responseChunkRequest(chunk, eos))
	rb := resp.GetResponseBody()
	if rb == nil {
		x.t.Fatalf("reply to a response chunk: %v", resp)
	}
	if m := rb.GetResponse().GetBodyMutation(); m != nil {
		return string(m.GetBody())
	}
	return chunk
}

func responseChunkRequest(chunk string, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: []byte(chunk), EndOfStream: eos}}}
}

func immediateStatus(resp *extprocv3.ProcessingResponse) (int, string) {
	ir := resp.GetImmediateResponse()
	if ir == nil {
		return 0, ""
	}
	return int(ir.GetStatus().GetCode()), string(ir.GetBody())
}

const chatPath = "/v1/chat/completions"

func authed(extra ...string) []string {
	return append([]string{":method", "POST", ":path", chatPath, "authorization", "Bearer k", "x-request-id", "r1",
		"content-type", "application/json"}, extra...)
}

func TestRequestPhaseRejections(t *testing.T) {
	h := newHarness(t, nil)
	cases := []struct {
		name    string
		headers []string
		body    string
		status  int
		want    string
	}{
		{"unknown path", []string{":method", "POST", ":path", "/v1/secret", "authorization", "Bearer k"}, "", 404, "unknown_url"},
		{"no key", []string{":method", "POST", ":path", chatPath}, "", 401, "invalid_api_key"},
		{"wrong key", []string{":method", "POST", ":path", chatPath, "authorization", "Bearer nope"}, "", 401, "invalid_api_key"},
		{"two keys", append(authed(), "authorization", "Bearer k"), "", 401, "invalid_api_key"},
		{"basic scheme", []string{":method", "POST", ":path", chatPath, "authorization", "Basic k"}, "", 401, "invalid_api_key"},
		{"malformed json", authed(), `{"model":`, 400, "not valid JSON"},
		{"missing model", authed(), `{"messages":[]}`, 400, "model parameter"},
		{"model not string", authed(), `{"model":4,"messages":[]}`, 400, "'model' must be"},
		{"messages not array", authed(), `{"model":"gpt-4o","messages":"hi"}`, 400, "'messages' must be an array"},
		{"array body", authed(), `[1,2]`, 400, "JSON object"},
		{"bad max_tokens", authed(), `{"model":"gpt-4o","messages":[],"max_tokens":"x"}`, 400, "max_tokens"},
		{"brace in user", authed("x-user-id", "a}b"), `{"model":"gpt-4o","messages":[]}`, 400, "brace"},
		{"form body", []string{":method", "POST", ":path", chatPath, "authorization", "Bearer k", "content-type", "application/x-www-form-urlencoded"}, "", 415, "must be JSON"},
		{"invalid utf-8", authed(), "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", 400, "UTF-8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := h.open(t)
			resp := x.requestHeaders(c.headers...)
			if c.body != "" {
				if ir := resp.GetImmediateResponse(); ir != nil {
					t.Fatalf("headers refused: %s", ir.GetBody())
				}
				resp = x.requestBody(c.body)
			}
			st, body := immediateStatus(resp)
			if st != c.status || !strings.Contains(body, c.want) || !strings.Contains(body, `"param":`) {
				t.Fatalf("got %d %s; want %d containing %q", st, body, c.status, c.want)
			}
		})
	}
}

func TestBilledEndpointWithoutBodyIsRefused(t *testing.T) {
	h := newHarness(t, nil)
	x := h.open(t)
	resp := x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: headersMsg(true, authed()...)}})
	if st, body := immediateStatus(resp); st != 400 || !strings.Contains(body, "no body") {
		t.Fatalf("got %d %s", st, body)
	}
}

// What leaves for the provider: the client's credential, the headers the
// firewall consumes and every x-aifirewall-* look-alike removed, and no
// provider key in the reply (Envoy puts it on). With SendKeys, the one
// deployment without a proxy to do it gets the key in the reply.
func TestForwardedHeaders(t *testing.T) {
	for _, sendKeys := range []bool{false, true} {
		h := newHarnessWith(t, nil, Config{Auth: identity.NewSharedKey("k"), Upstream: provider.OpenAI, UpstreamKey: "up-secret",
			DailyLimit: billing.NanosPerUSD, SendKeys: sendKeys})
		x := h.open(t)
		resp := x.requestHeaders(authed("x-api-key", "k", "x-user-id", "u", "x-forwarded-client-cert", "By=spiffe://x",
			"x-aifirewall-provider", "other", "x-aifirewall-anything", "1")...)
		mut := resp.GetRequestHeaders().GetResponse().GetHeaderMutation()
		removed := mut.GetRemoveHeaders()
		for _, h := range []string{"authorization", "x-api-key", "x-user-id", "x-forwarded-client-cert", "x-aifirewall-provider", "x-aifirewall-anything"} {
			if !slices.Contains(removed, h) {
				t.Errorf("send keys %v: %s is forwarded (removed: %v)", sendKeys, h, removed)
			}
		}
		set := map[string]string{}
		for _, o := range mut.GetSetHeaders() {
			set[o.GetHeader().GetKey()] = string(o.GetHeader().GetRawValue())
		}
		if set["accept-encoding"] != "identity" {
			t.Errorf("set = %v", set)
		}
		raw, _ := proto.Marshal(resp)
		if got := bytes.Contains(raw, []byte("up-secret")); got != sendKeys || (sendKeys && set["authorization"] != "Bearer up-secret") {
			t.Errorf("send keys %v: the reply carries the key: %v (set %v)", sendKeys, got, set)
		}
	}
}

type downStore struct{ billing.Store }

func (downStore) Admit(context.Context, billing.Admission) (billing.Budget, error) {
	return billing.Budget{}, errors.New("connection refused")
}

func TestStoreDownFailsClosed(t *testing.T) {
	h := newHarness(t, downStore{})
	x := h.open(t)
	x.requestHeaders(authed()...)
	st, body := immediateStatus(x.requestBody(`{"model":"gpt-4o","messages":[]}`))
	if st != 503 || !strings.Contains(body, "service_unavailable") || strings.Contains(body, "refused") {
		t.Fatalf("got %d %s", st, body)
	}
}

func TestOverBudget(t *testing.T) {
	store := billing.NewMemStore()
	h := newHarness(t, store)
	day := billing.Day(time.Now(), time.UTC)
	store.Settle(context.Background(), billing.Settlement{User: "u", Day: day, RequestID: "old", Amount: billing.NanosPerUSD})
	x := h.open(t)
	x.requestHeaders(authed("x-user-id", "u")...)
	resp := x.requestBody(`{"model":"gpt-4o","messages":[]}`)
	st, body := immediateStatus(resp)
	if st != 402 || !strings.Contains(body, `"type":"budget_exceeded"`) {
		t.Fatalf("got %d %s", st, body)
	}
	var retry string
	for _, o := range resp.GetImmediateResponse().GetHeaders().GetSetHeaders() {
		if o.GetHeader().GetKey() == "retry-after" {
			retry = string(o.GetHeader().GetRawValue())
		}
	}
	if retry == "" || retry == "0" {
		t.Fatalf("retry-after = %q", retry)
	}
}

// settled waits for the settlements under way to be written (they are
// written asynchronously).
func (h *harness) settled() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.srv.Drain(ctx)
}

// spent is user's spend today, once the settlements under way are written.
func (h *harness) spent(user string) billing.Nanos {
	h.settled()
	b, _ := h.store.Budget(context.Background(), user, billing.Day(time.Now(), time.UTC), 0)
	return b.Spent
}
