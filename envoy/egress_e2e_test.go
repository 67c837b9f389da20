package envoy_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// Each fake provider accepts only its own key.
var egressKeys = map[string]string{"openai": "sk-openai-only", "anthropic": "sk-ant-only", "openrouter": "sk-or-only"}

// egress is one firewall in front of three providers: an OpenAI-format
// one, Anthropic (its key from a file) and OpenRouter (its own price for
// gpt-4o-mini), each a fake upstream on its own port.
type egress struct {
	*testenv.Stack
	up map[string]*fakellm.Server
}

func startEgress(t *testing.T, policies string, env []string, eo envoy.Options) *egress {
	t.Helper()
	e := &egress{up: map[string]*fakellm.Server{}}
	urls := map[string]string{}
	for name, key := range egressKeys {
		e.up[name] = &fakellm.Server{ExpectKey: key}
		srv := httptest.NewServer(e.up[name])
		t.Cleanup(srv.Close)
		urls[name] = srv.URL
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "anthropic-key")
	if err := os.WriteFile(keyFile, []byte(egressKeys["anthropic"]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "providers.yaml")
	yaml := fmt.Sprintf(`providers:
  - name: openai
    format: openai
    base_url: %s
    hosts: [api.openai.test]
    path_prefix: /openai
    api_key_env: TEST_OPENAI_KEY
  - name: anthropic
    format: anthropic
    base_url: %s
    hosts: [api.anthropic.test]
    path_prefix: /anthropic
    api_key_file: %s
  - name: openrouter
    format: openrouter
    base_url: %s/api
    hosts: [openrouter.test]
    path_prefix: /openrouter
    api_key_env: TEST_OPENROUTER_KEY
    prices:
      gpt-4o-mini: {input: "0.30", output: "1.20"}
%s`, urls["openai"], urls["anthropic"], keyFile, urls["openrouter"], policies)
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := []string{"TEST_OPENAI_KEY=" + egressKeys["openai"], "TEST_OPENROUTER_KEY=" + egressKeys["openrouter"]}
	e.Stack = testenv.StartStack(t, testenv.StackOptions{ProvidersFile: file, Env: env, EnvoyEnv: keys, Envoy: eo})
	return e
}

// call sends a request with the given Host header (none: Envoy's address);
// an empty body makes it a GET.
func (e *egress) call(t *testing.T, host, path, key, body string, headers map[string]string) *http.Response {
	t.Helper()
	if host != "" {
		headers = with(headers, "host", host)
	}
	if body == "" {
		return send(t, e.Stack, "GET", path, key, nil, headers)
	}
	return send(t, e.Stack, "POST", path, key, strings.NewReader(body), headers)
}

// raw sends request bytes as they are, so that paths reach Envoy exactly
// as an attacker writes them (Go's client would not send some of them).
func (e *egress) raw(t *testing.T, request string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.Envoy.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func chatBody(model string, stream bool) string {
	return fmt.Sprintf(`{"model":%q,"stream":%v,"max_tokens":50,"messages":[{"role":"user","content":"Hello!"}]}`, model, stream)
}

func messagesBody(model string) string {
	return fmt.Sprintf(`{"model":%q,"max_tokens":50,"messages":[{"role":"user","content":"Hello!"}]}`, model)
}

// usage steers the fake upstreams: 1000 prompt tokens, 10 output words.
var usage = map[string]string{"x-fake-prompt-tokens": "1000", "x-fake-words": "10"}

func with(h map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// count is how many requests each upstream received.
func (e *egress) count() map[string]int {
	n := map[string]int{}
	for name, u := range e.up {
		n[name] = len(u.Requests())
	}
	return n
}

// onlyOwnKeys fails unless every request each upstream received carried
// that provider's key and no other credential.
func (e *egress) onlyOwnKeys(t *testing.T) {
	t.Helper()
	for name, u := range e.up {
		for _, r := range u.Requests() {
			auth, apiKey := r.Headers.Get("Authorization"), r.Headers.Get("X-Api-Key")
			if name == "anthropic" && (apiKey != egressKeys[name] || auth != "") ||
				name != "anthropic" && (auth != "Bearer "+egressKeys[name] || apiKey != "") {
				t.Errorf("%s received %s %s with authorization=%q x-api-key=%q", name, r.Method, r.Path, auth, apiKey)
			}
		}
	}
}

func drain(t *testing.T, resp *http.Response, want int) {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, want, b)
	}
}

// Three providers behind one Envoy, routed by host and by path prefix:
// each gets its own path, its own key, and each is billed with its own
// format and price.
func TestEgressRoutesByHostAndPath(t *testing.T) {
	e := startEgress(t, "", nil, envoy.Options{})
	key := testenv.ClientKey

	// By path prefix: the prefix is removed on the way upstream.
	drain(t, e.call(t, "", "/openai/v1/chat/completions", key, chatBody("gpt-4o-mini", true), with(usage, "x-user-id", "by-path")), 200)
	if got := e.up["openai"].Requests(); len(got) != 1 || got[0].Path != "/v1/chat/completions" {
		t.Fatalf("openai received %+v", got)
	}
	e.WaitSpent(t, today("by-path"), 1000*miniIn+10*miniOut)

	// By host: Anthropic's format, its key as x-api-key, its prices
	// (claude-haiku-4-5: $1 in, $5 out per million).
	drain(t, e.call(t, "api.anthropic.test", "/v1/messages", key, messagesBody("claude-haiku-4-5"), with(usage, "x-user-id", "by-host")), 200)
	if got := e.up["anthropic"].Requests(); len(got) != 1 || got[0].Path != "/v1/messages" || got[0].Headers.Get("Anthropic-Version") == "" {
		t.Fatalf("anthropic received %+v", got)
	}
	e.WaitSpent(t, today("by-host"), 1000*1000+10*5000)

	// The same model id at OpenRouter costs what OpenRouter charges, by
	// host and by path; its base path /api is kept.
	drain(t, e.call(t, "openrouter.test:443", "/v1/chat/completions", key, chatBody("gpt-4o-mini", true), with(usage, "x-user-id", "or-host")), 200)
	drain(t, e.call(t, "", "/openrouter/v1/chat/completions", key, chatBody("gpt-4o-mini", false), with(usage, "x-user-id", "or-path")), 200)
	for _, r := range e.up["openrouter"].Requests() {
		if r.Path != "/api/v1/chat/completions" {
			t.Fatalf("openrouter received path %q", r.Path)
		}
	}
	e.WaitSpent(t, today("or-host"), 1000*300+10*1200)
	e.WaitSpent(t, today("or-path"), 1000*300+10*1200)
	if n := e.count(); n["openai"] != 1 || n["anthropic"] != 1 || n["openrouter"] != 2 {
		t.Fatalf("requests per upstream: %v", n)
	}
	e.onlyOwnKeys(t)

	// A host and path no provider serves: 404 naming what is served.
	resp := e.call(t, "api.unknown.test", "/v1/chat/completions", key, chatBody("gpt-4o-mini", false), nil)
	if resp.StatusCode != 404 || resp.Header.Get("content-type") != "application/json" {
		t.Fatalf("unrouted request: %d %s", resp.StatusCode, resp.Header.Get("content-type"))
	}
	if msg := decodeError(t, resp).Error.Message; !strings.Contains(msg, "api.anthropic.test") || !strings.Contains(msg, "/openrouter/") {
		t.Fatalf("404 message does not say what is served: %q", msg)
	}
	if !strings.Contains(e.Envoy.AccessLog(), `"aifirewall_provider":"openai"`) {
		t.Fatal("the access log does not name the provider")
	}
}

// A client cannot reach another provider, or another provider's key,
// through the headers or the path it sends.
func TestEgressCannotBeSpoofed(t *testing.T) {
	e := startEgress(t, "", nil, envoy.Options{})
	key := testenv.ClientKey

	// Host picks OpenAI; x-forwarded-host and headers named like the
	// route's gRPC metadata change nothing.
	spoof := with(usage, "x-user-id", "spoofer", "x-forwarded-host", "api.anthropic.test",
		"x-aifirewall-provider", "anthropic", "x-aifirewall-path-prefix", "/anthropic")
	drain(t, e.call(t, "api.openai.test", "/v1/chat/completions", key, chatBody("gpt-4o-mini", true), spoof), 200)
	if n := e.count(); n["openai"] != 1 || n["anthropic"] != 0 {
		t.Fatalf("spoofed headers moved the request: %v", n)
	}
	e.WaitSpent(t, today("spoofer"), 1000*miniIn+10*miniOut)
	// Host names match as DNS does, whatever their case.
	drain(t, e.call(t, "API.Anthropic.TEST", "/v1/messages", key, messagesBody("claude-haiku-4-5"), nil), 200)
	if n := e.count(); n["anthropic"] != 1 {
		t.Fatalf("an upper-case host: %v", n)
	}

	// The path is normalised before routing, so the route and the sidecar
	// agree: /openai/../anthropic/ is Anthropic, with Anthropic's key and
	// format, and OpenAI sees nothing.
	before := e.count()
	st, body := e.raw(t, "POST /openai/../anthropic/v1/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "+key+
		"\r\nContent-Type: application/json\r\nx-user-id: dotdot\r\nx-fake-prompt-tokens: 1000\r\nx-fake-words: 10\r\nContent-Length: "+
		fmt.Sprint(len(messagesBody("claude-haiku-4-5")))+"\r\nConnection: close\r\n\r\n"+messagesBody("claude-haiku-4-5"))
	if n := e.count(); st != 200 || n["anthropic"] != before["anthropic"]+1 || n["openai"] != before["openai"] {
		t.Fatalf("dot segments: %d %s, requests %v", st, body, n)
	}
	e.WaitSpent(t, today("dotdot"), 1000*1000+10*5000)

	// Encoded slashes could be decoded differently upstream: refused.
	before = e.count()
	for _, path := range []string{"/openai%2F..%2Fanthropic/v1/messages", "/openai/..%2Fanthropic/v1/messages", "/openai/v1%2fchat/completions"} {
		st, body := e.raw(t, "POST "+path+" HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "+key+
			"\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
		if st != 400 || !strings.Contains(body, `"code":"malformed_request"`) {
			t.Errorf("%s: %d %s, want 400 malformed_request", path, st, body)
		}
	}
	if n := e.count(); fmt.Sprint(n) != fmt.Sprint(before) {
		t.Errorf("a refused path reached a provider: %v -> %v", before, n)
	}
	// Dot segments spelled with escapes are normalised like plain ones,
	// and an absolute-form request target wins over the Host header, for
	// the route and the sidecar alike: both land at Anthropic, with its key.
	for _, head := range []string{"POST /openai/%2e%2e/anthropic/v1/messages HTTP/1.1\r\nHost: localhost",
		"POST http://api.anthropic.test/v1/messages HTTP/1.1\r\nHost: api.openai.test"} {
		before = e.count()
		body := messagesBody("claude-haiku-4-5")
		st, resp := e.raw(t, head+"\r\nAuthorization: Bearer "+key+"\r\nContent-Type: application/json\r\nContent-Length: "+
			fmt.Sprint(len(body))+"\r\nConnection: close\r\n\r\n"+body)
		if n := e.count(); st != 200 || n["anthropic"] != before["anthropic"]+1 || n["openai"] != before["openai"] {
			t.Errorf("%q: %d %s, requests %v -> %v", head, st, resp, before, n)
		}
	}
	e.onlyOwnKeys(t)
}

// The policy matrix for a shared-key user, a per-user key and an unnamed
// user: allowed, denied provider, denied model. A denied request gets 403
// naming what is allowed, reserves nothing and reaches no provider.
func TestEgressPolicyByUser(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(keys, []byte("keys:\n  - sha256: "+identity.HashKey("alice-secret")+"\n    user: alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEgress(t, `policies:
  - identities: [alice]
    providers: [openai]
    models: [gpt-4o-mini]
  - identities: [team-a]
    providers: [anthropic]
  - identities: ["*"]
    providers: [openrouter]
`, []string{"IDENTITY_MODE=shared", "KEYS_FILE=" + keys}, envoy.Options{})

	cases := []struct {
		name, key, user, path, body, code string
	}{
		{"per-user key, allowed", "alice-secret", "", "/openai/v1/chat/completions", chatBody("gpt-4o-mini", true), ""},
		{"per-user key, denied model", "alice-secret", "", "/openai/v1/chat/completions", chatBody("gpt-4o", true), "model_not_allowed"},
		{"per-user key, denied provider", "alice-secret", "", "/anthropic/v1/messages", messagesBody("claude-haiku-4-5"), "provider_not_allowed"},
		{"shared-key user, allowed", testenv.ClientKey, "team-a", "/anthropic/v1/messages", messagesBody("claude-opus-4-1"), ""},
		{"shared-key user, denied provider", testenv.ClientKey, "team-a", "/openai/v1/chat/completions", chatBody("gpt-4o-mini", false), "provider_not_allowed"},
		{"unnamed user, allowed", testenv.ClientKey, "bob", "/openrouter/v1/chat/completions", chatBody("gpt-4o", true), ""},
		{"unnamed user, denied provider", testenv.ClientKey, "bob", "/openai/v1/chat/completions", chatBody("gpt-4o-mini", true), "provider_not_allowed"},
		{"unnamed user, no body", testenv.ClientKey, "bob", "/openai/v1/models", "", "provider_not_allowed"},
		{"per-user key cannot pose as another", "alice-secret", "team-a", "/anthropic/v1/messages", messagesBody("claude-haiku-4-5"), "user_override_forbidden"},
	}
	for _, c := range cases {
		before := e.count()
		h := map[string]string{}
		if c.user != "" {
			h["x-user-id"] = c.user
		}
		resp := e.call(t, "", c.path, c.key, c.body, h)
		if c.code == "" {
			drain(t, resp, 200)
			continue
		}
		if resp.StatusCode != 403 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s: %d %s, want 403", c.name, resp.StatusCode, b)
		}
		er := decodeError(t, resp)
		if er.Error.Code != c.code || er.Error.Type != "permission_error" {
			t.Fatalf("%s: %+v", c.name, er.Error)
		}
		if n := e.count(); fmt.Sprint(n) != fmt.Sprint(before) {
			t.Fatalf("%s: a denied request was forwarded: %v -> %v", c.name, before, n)
		}
	}
	// What the refusals say: what the identity may call instead.
	resp := e.call(t, "", "/openai/v1/chat/completions", "alice-secret", chatBody("gpt-4o", false), nil)
	if msg := decodeError(t, resp).Error.Message; !strings.Contains(msg, `may not use model "gpt-4o" at provider "openai"; allowed there: gpt-4o-mini`) {
		t.Fatalf("model refusal: %q", msg)
	}
	resp = e.call(t, "", "/openai/v1/chat/completions", testenv.ClientKey, chatBody("gpt-4o-mini", false), map[string]string{"x-user-id": "bob"})
	if msg := decodeError(t, resp).Error.Message; !strings.Contains(msg, `bob may not call provider "openai"`) || !strings.Contains(msg, "it may call openrouter") {
		t.Fatalf("provider refusal: %q", msg)
	}
	// Nothing was reserved or billed for the refusals.
	for _, u := range []string{"alice", "team-a", "bob"} {
		if n, _ := e.RDB.HLen(t.Context(), "reserved:{"+u+"}:"+billing.Day(time.Now(), time.UTC)).Result(); n != 0 {
			t.Errorf("%s holds %d reservations", u, n)
		}
	}
	e.onlyOwnKeys(t)
}

// A workload's SPIFFE ID (mesh mode, mTLS at Envoy) is an identity the
// policy names, here by namespace.
func TestEgressPolicyBySPIFFEID(t *testing.T) {
	const workload = "spiffe://example.org/ns/billing/sa/reporter"
	p := testinfra.NewPKI(t, workload)
	o := envoy.Options{}
	o.TLS.CertFile, o.TLS.KeyFile, o.TLS.ClientCAFile = p.CertFile, p.KeyFile, p.CAFile
	e := startEgress(t, `policies:
  - identities: ["spiffe://example.org/ns/billing/*"]
    providers: [anthropic]
    models: ["claude-haiku-*"]
`, []string{"IDENTITY_MODE=mesh"}, o)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: p.CAPool, Certificates: []tls.Certificate{p.Client}}}}
	base := strings.Replace(e.Envoy.URL(), "http://", "https://", 1)
	do := func(path, body string) *http.Response {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("content-type", "application/json")
		for k, v := range usage {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	drain(t, do("/anthropic/v1/messages", messagesBody("claude-haiku-4-5")), 200)
	e.WaitSpent(t, today(workload), 1000*1000+10*5000)
	if r := do("/anthropic/v1/messages", messagesBody("claude-opus-4-1")); r.StatusCode != 403 || decodeError(t, r).Error.Code != "model_not_allowed" {
		t.Fatalf("denied model: %d", r.StatusCode)
	}
	if r := do("/openai/v1/chat/completions", chatBody("gpt-4o-mini", true)); r.StatusCode != 403 || decodeError(t, r).Error.Code != "provider_not_allowed" {
		t.Fatalf("denied provider: %d", r.StatusCode)
	}
	if n := e.count(); n["anthropic"] != 1 || n["openai"] != 0 || n["openrouter"] != 0 {
		t.Fatalf("requests per upstream: %v", n)
	}
	e.onlyOwnKeys(t)
}
