package envoy_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

// Holes an attack on the multi-provider egress found, each beside the
// request that must keep working.

// Fallback lists name models the provider may run instead of "model": each
// is held to the policy, and the reservation covers the dearest.
func TestEgressFallbacksHeldToPolicy(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	os.WriteFile(keys, []byte("keys:\n  - sha256: "+identity.HashKey("alice-secret")+"\n    user: alice\n"+
		"  - sha256: "+identity.HashKey("frugal-secret")+"\n    user: frugal\n    daily_limit: \"0.01\"\n"), 0o600)
	e := startEgress(t, `policies:
  - identities: [alice]
    providers: [openrouter]
    models: ["openai/gpt-4o-mini"]
  - identities: ["*"]
    providers: [openrouter]
`, []string{"IDENTITY_MODE=keys", "KEYS_FILE=" + keys, "STREAM_CUTOFF=false"}, envoy.Options{}) // the estimate rule: with the cut-off, the room bounds a stream
	chat := `{"model":"openai/gpt-4o-mini","max_tokens":50,"messages":[{"role":"user","content":"Hello!"}]%s}`
	msgs := `{"model":"openai/gpt-4o-mini","max_tokens":50,"messages":[{"role":"user","content":"Hello!"}]%s}`
	for _, c := range []struct {
		name, path, body, param string
	}{
		{"models", "/openrouter/v1/chat/completions", fmt.Sprintf(chat, `,"models":["openai/gpt-4o-mini","openai/o1-pro"]`), "models[1]"},
		{"models with route", "/openrouter/v1/chat/completions", fmt.Sprintf(chat, `,"route":"fallback","models":["openai/o1-pro"]`), "models[0]"},
		{"Messages fallbacks", "/openrouter/v1/messages", fmt.Sprintf(msgs, `,"fallbacks":[{"model":"openai/o1-pro"}]`), "fallbacks[0].model"},
		{"plain fallbacks", "/openrouter/v1/chat/completions", fmt.Sprintf(chat, `,"fallbacks":["openai/o1-pro"]`), "fallbacks[0]"},
		{"auto router", "/openrouter/v1/chat/completions", strings.Replace(fmt.Sprintf(chat, ""), "openai/gpt-4o-mini", "openrouter/auto", 1), "model"},
		{"preset model", "/openrouter/v1/chat/completions", strings.Replace(fmt.Sprintf(chat, ""), "openai/gpt-4o-mini", "@preset/cheap", 1), "model"},
		{"preset field", "/openrouter/v1/chat/completions", fmt.Sprintf(chat, `,"preset":"cheap"`), "preset"},
	} {
		before := e.count()
		resp := e.call(t, "", c.path, "alice-secret", c.body, usage)
		if resp.StatusCode != 403 {
			b, _ := io.ReadAll(resp.Body)
			t.Errorf("%s: %d %s, want 403", c.name, resp.StatusCode, b)
			continue
		}
		er := decodeError(t, resp)
		if er.Error.Code != "model_not_allowed" || er.Error.Param == nil || *er.Error.Param != c.param || !strings.Contains(er.Error.Message, c.param) {
			t.Errorf("%s: %+v, want model_not_allowed naming %s", c.name, er.Error, c.param)
		}
		if n := e.count(); fmt.Sprint(n) != fmt.Sprint(before) {
			t.Errorf("%s: forwarded: %v -> %v", c.name, before, n)
		}
	}
	// Allowed fallbacks pass.
	drain(t, e.call(t, "", "/openrouter/v1/chat/completions", "alice-secret",
		fmt.Sprintf(chat, `,"models":["openai/gpt-4o-mini"],"fallbacks":[{"model":"openai/gpt-4o-mini"}]`), usage), 200)

	// An identity that may use any model may name a dear fallback, but its
	// reservation covers it: held open, a request naming o1-pro ($600 per
	// million output tokens) as a fallback, or the auto router that may pick
	// it, reserves at least its 50 output tokens at that price, so a second
	// request within frugal's $0.01 is refused while it runs.
	stream := `{"model":"openai/gpt-4o-mini","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"Hello!"}]%s}`
	for i, body := range []string{fmt.Sprintf(stream, `,"models":["openai/gpt-4o-mini","openai/o1-pro"]`),
		strings.Replace(fmt.Sprintf(stream, ""), "openai/gpt-4o-mini", "openrouter/auto", 1)} {
		gate := fmt.Sprint("dear-", i)
		resp := e.call(t, "", "/openrouter/v1/chat/completions", "frugal-secret", body, with(usage, "x-fake-gate", gate))
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", body, resp.StatusCode)
		}
		br := bufio.NewReader(resp.Body)
		readWords(t, br, 1)
		if _, b := getBudget(t, e.Stack, "frugal-secret", nil); b.ReservedNanos < 50*600_000 {
			t.Errorf("%s reserves %d nano-dollars, less than 50 tokens of o1-pro", body, b.ReservedNanos)
		}
		second := e.call(t, "", "/openrouter/v1/chat/completions", "frugal-secret", fmt.Sprintf(chat, ""), usage)
		if second.StatusCode != 402 {
			t.Errorf("a request beside a dear fallback's reservation: %d, want 402", second.StatusCode)
		}
		e.up["openrouter"].Release(gate)
		io.Copy(io.Discard, br)
	}
	// A fallback list that cannot be read one way is refused.
	for _, body := range []string{fmt.Sprintf(chat, `,"models":"openai/o1-pro"`), fmt.Sprintf(chat, `,"fallbacks":[{"Model":"openai/o1-pro"}]`),
		fmt.Sprintf(chat, `,"Models":["openai/o1-pro"]`)} {
		resp := e.call(t, "", "/openrouter/v1/chat/completions", "frugal-secret", body, usage)
		if resp.StatusCode != 400 {
			t.Errorf("%s: %d, want 400", body, resp.StatusCode)
		}
		resp.Body.Close()
	}
}

// A provider's own price applies to the dated snapshot ids real providers
// answer with, for the reservation and the bill alike.
func TestEgressOwnPricesCoverSnapshots(t *testing.T) {
	e := startEgress(t, "", nil, envoy.Options{})
	// OpenRouter's own gpt-4o-mini: $0.30 / $1.20 per million.
	drain(t, e.call(t, "", "/openrouter/v1/chat/completions", testenv.ClientKey, chatBody("gpt-4o-mini-2024-07-18", true),
		with(usage, "x-user-id", "dated-request")), 200)
	e.WaitSpent(t, today("dated-request"), 1000*300+10*1200)
	drain(t, e.call(t, "", "/openrouter/v1/chat/completions", testenv.ClientKey, chatBody("gpt-4o-mini", true),
		with(usage, "x-user-id", "dated-answer", "x-fake-model", "gpt-4o-mini-2024-07-18")), 200)
	e.WaitSpent(t, today("dated-answer"), 1000*300+10*1200)
}

// Requests a client can send at will do not raise the operator's alarm,
// and rules hold for every method.
func TestEgressOddRequests(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	os.WriteFile(keys, []byte("keys:\n  - sha256: "+identity.HashKey("alice-secret")+"\n    user: alice\n"), 0o600)
	e := startEgress(t, "", []string{"IDENTITY_MODE=shared", "KEYS_FILE=" + keys}, envoy.Options{})
	before := e.count()

	// CONNECT, with or without a key: refused as a client error, not as a
	// misconfiguration.
	for _, auth := range []string{"", "Authorization: Bearer " + testenv.ClientKey + "\r\n"} {
		st, body := e.raw(t, "CONNECT api.openai.test:443 HTTP/1.1\r\nHost: api.openai.test:443\r\n"+auth+"Connection: close\r\n\r\n")
		if st != 405 && st != 404 && st != 400 || strings.Contains(body, "gateway_misconfigured") {
			t.Errorf("CONNECT (%q): %d %s", auth, st, body)
		}
	}
	if m, _ := sidecarMetric(t, e.Stack, `aifirewall_requests_total{decision="misrouted"}`); m != 0 {
		t.Errorf("a client's CONNECT counted %v misrouted requests", m)
	}

	// A per-user key naming another user is refused for a GET as for a POST.
	resp := e.call(t, "", "/openai/v1/models", "alice-secret", "", map[string]string{"x-user-id": "bob"})
	if resp.StatusCode != 403 || decodeError(t, resp).Error.Code != "user_override_forbidden" {
		t.Errorf("GET with another user's name: %d", resp.StatusCode)
	}
	drain(t, e.call(t, "", "/openai/v1/models", "alice-secret", "", nil), 200)
	if n := e.count(); n["openai"] != before["openai"]+1 {
		t.Errorf("requests: %v -> %v", before, n)
	}

	// A fully qualified host (trailing dot) reaches the provider it names.
	drain(t, e.call(t, "api.anthropic.test.", "/v1/messages", testenv.ClientKey, messagesBody("claude-haiku-4-5"), usage), 200)
	if n := e.count(); n["anthropic"] != before["anthropic"]+1 || n["openrouter"] != before["openrouter"] {
		t.Errorf("trailing-dot host: %v -> %v", before, n)
	}
	e.onlyOwnKeys(t)
}

// What a provider sees: none of the headers the firewall reads or owns.
func TestEgressProviderSeesNoInternalHeaders(t *testing.T) {
	e := startEgress(t, "", nil, envoy.Options{})
	drain(t, e.call(t, "", "/openai/v1/chat/completions", testenv.ClientKey, chatBody("gpt-4o-mini", true),
		with(usage, "x-user-id", "mona", "x-aifirewall-provider", "anthropic", "X-AIFirewall-Team", "finance",
			"x-forwarded-client-cert", "By=spiffe://corp/ns/a/sa/b", "x-forwarded-for", "10.1.2.3")), 200)
	got := e.up["openai"].Requests()
	if len(got) != 1 {
		t.Fatalf("openai received %d requests", len(got))
	}
	for name, v := range got[0].Headers {
		l := strings.ToLower(name)
		if l == "x-user-id" || strings.HasPrefix(l, "x-aifirewall-") || strings.HasPrefix(l, "x-envoy-") ||
			l == "x-forwarded-client-cert" || l == "x-forwarded-for" {
			t.Errorf("the provider received %s: %q", name, v)
		}
		if strings.Contains(strings.Join(v, ","), "mona") || strings.Contains(strings.Join(v, ","), testenv.ClientKey) {
			t.Errorf("the provider received %s: %q", name, v)
		}
	}
	e.WaitSpent(t, today("mona"), 1000*miniIn+10*miniOut)
}
