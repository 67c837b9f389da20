package processor

import (
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	grpcmd "google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/processor/provider"
	"github.com/aifirewall/aifirewall/providers"
)

// twoProviders: "a" (OpenAI format, path prefix /a) and "b" (Anthropic,
// routed by host), each with its own key; the policy lets "carol" call b only.
func twoProviders(t *testing.T) *harness {
	f, err := providers.Parse("p.yaml", []byte(`providers:
  - {name: a, format: openai, base_url: "http://a.test", path_prefix: /a, api_key_env: X}
  - {name: b, format: anthropic, base_url: "http://b.test", hosts: [b.test], api_key_env: Y}
policies:
  - {identities: [carol], providers: [b]}
`))
	if err != nil {
		t.Fatal(err)
	}
	return newHarnessWith(t, nil, Config{Auth: identity.NewSharedKey("k"), DailyLimit: billing.NanosPerUSD, Policy: f.PolicySet(),
		SendKeys: true, // which key goes out shows which provider was picked
		Upstreams: map[string]*Upstream{
			"a": {Name: "a", Kind: provider.OpenAI, PathPrefix: "/a", Key: func() string { return "key-a" }},
			"b": {Name: "b", Kind: provider.Anthropic, Key: func() string { return "key-b" }},
		}})
}

// headerSets is what a request-headers reply sets, by header name.
func headerSets(resp *extprocv3.ProcessingResponse) map[string]string {
	set := map[string]string{}
	for _, o := range resp.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
		set[o.GetHeader().GetKey()] = string(o.GetHeader().GetRawValue())
	}
	return set
}

// The route's metadata picks the provider, its key and its format; its
// path prefix is removed to find the API path.
func TestRouteMetadataPicksTheProvider(t *testing.T) {
	h := twoProviders(t)
	x := h.openWith(t, grpcmd.Pairs(providers.MetadataProvider, "a", providers.MetadataPathPrefix, "/a"))
	set := headerSets(x.requestHeaders(":method", "POST", ":path", "/a/v1/chat/completions", "authorization", "Bearer k",
		"x-request-id", "r-a", "content-type", "application/json"))
	if set["authorization"] != "Bearer key-a" || set["x-api-key"] != "" {
		t.Fatalf("provider a: %v", set)
	}
	x = h.openWith(t, grpcmd.Pairs(providers.MetadataProvider, "b"))
	set = headerSets(x.requestHeaders(":method", "POST", ":path", "/v1/messages", "authorization", "Bearer k",
		"x-request-id", "r-b", "content-type", "application/json"))
	if set["x-api-key"] != "key-b" || set["authorization"] != "" || set["anthropic-version"] == "" {
		t.Fatalf("provider b: %v", set)
	}
}

// Whatever does not fit the providers the sidecar knows is refused, never
// forwarded with a guessed key.
func TestMisroutedRequestsAreRefused(t *testing.T) {
	h := twoProviders(t)
	for _, c := range []struct {
		name string
		md   grpcmd.MD
		path string
	}{
		{"unknown provider", grpcmd.Pairs(providers.MetadataProvider, "zzz"), "/v1/chat/completions"},
		{"two providers", grpcmd.Pairs(providers.MetadataProvider, "a", providers.MetadataProvider, "b"), "/v1/chat/completions"},
		{"prefix of another provider", grpcmd.Pairs(providers.MetadataProvider, "b", providers.MetadataPathPrefix, "/a"), "/a/v1/messages"},
		{"path outside the prefix", grpcmd.Pairs(providers.MetadataProvider, "a", providers.MetadataPathPrefix, "/a"), "/ab/v1/chat/completions"},
	} {
		x := h.openWith(t, c.md)
		st, body := immediateStatus(x.requestHeaders(":method", "POST", ":path", c.path, "authorization", "Bearer k",
			"content-type", "application/json"))
		if st != 500 || !strings.Contains(body, "gateway_misconfigured") || strings.Contains(body, "key-") {
			t.Errorf("%s: %d %s", c.name, st, body)
		}
		redactionSafe(t, body)
	}
}

// A request Envoy routed nowhere (no provider named: a CONNECT, a host and
// path no route takes) is the client's doing, not a misconfiguration: 404
// or 405, never the operator's 500 alarm.
func TestUnroutedRequestsAreNotFound(t *testing.T) {
	h := twoProviders(t)
	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"POST", "/v1/chat/completions", 404, "unknown_url"},
		{"CONNECT", "", 405, "method_not_allowed"},
		{"CONNECT", "api.openai.com:443", 405, "method_not_allowed"},
	} {
		x := h.open(t)
		st, body := immediateStatus(x.requestHeaders(":method", c.method, ":path", c.path, ":authority", "api.openai.com:443"))
		if st != c.status || !strings.Contains(body, `"code":"`+c.code+`"`) {
			t.Errorf("%s %s: %d %s", c.method, c.path, st, body)
		}
		redactionSafe(t, body)
	}
}

// The egress policy refuses before anything is reserved.
func TestPolicyRefusesBeforeReserving(t *testing.T) {
	h := twoProviders(t)
	x := h.openWith(t, grpcmd.Pairs(providers.MetadataProvider, "a", providers.MetadataPathPrefix, "/a"))
	x.requestHeaders(":method", "POST", ":path", "/a/v1/chat/completions", "authorization", "Bearer k", "x-user-id", "carol",
		"x-request-id", "r-carol", "content-type", "application/json")
	st, body := immediateStatus(x.requestBody(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
	if st != 403 || !strings.Contains(body, `"code":"provider_not_allowed"`) || !strings.Contains(body, "it may call b") {
		t.Fatalf("%d %s", st, body)
	}
	redactionSafe(t, body)
	b, err := h.store.Admit(t.Context(), billing.Admission{User: "carol", Day: billing.Day(h.srv.now(), h.srv.cfg.Location),
		RequestID: "probe", Amount: 0, Limit: billing.NanosPerUSD, TTL: h.srv.cfg.ReservationTTL})
	if err != nil || b.Reserved != 0 {
		t.Fatalf("carol holds a reservation after a refusal: %+v %v", b, err)
	}
}

// Behind Envoy Gateway, which sets no per-route gRPC metadata, the route
// name Envoy sends as an attribute names the provider: an HTTPRoute named
// after it. A route name naming no known provider is refused.
func TestEnvoyGatewayRouteNamePicksTheProvider(t *testing.T) {
	h := twoProviders(t)
	send := func(route string) *extprocv3.ProcessingResponse {
		x := h.open(t)
		attrs := map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{
			"xds.route_name": structpb.NewStringValue(route)}}}
		return x.send(&extprocv3.ProcessingRequest{Attributes: attrs, Request: &extprocv3.ProcessingRequest_RequestHeaders{
			RequestHeaders: headersMsg(false, ":method", "POST", ":path", "/v1/messages", "authorization", "Bearer k",
				"content-type", "application/json")}})
	}
	if set := headerSets(send("httproute/aifirewall/b/rule/0/match/0/api_anthropic_com")); set["x-api-key"] != "key-b" {
		t.Fatalf("route of HTTPRoute b: %v", set)
	}
	// A provider with a path prefix, named by its route: the prefix, which
	// the route rewrites away, is not part of the API path.
	x := h.open(t)
	attrs := map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{
		"xds.route_name": structpb.NewStringValue("httproute/aifirewall/a/rule/0/match/0/*")}}}
	resp := x.send(&extprocv3.ProcessingRequest{Attributes: attrs, Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: headersMsg(false, ":method", "POST", ":path", "/a/v1/chat/completions", "authorization", "Bearer k",
			"content-type", "application/json")}})
	if set := headerSets(resp); set["authorization"] != "Bearer key-a" {
		t.Fatalf("route of HTTPRoute a under /a: %v (%v)", set, resp)
	}
	for _, route := range []string{"httproute/aifirewall/zzz/rule/0/match/0/*", "provider_b", "httproute/b"} {
		if st, body := immediateStatus(send(route)); st != 500 || !strings.Contains(body, "gateway_misconfigured") {
			t.Errorf("route %q: %d %s", route, st, body)
		}
	}
}
