//go:build deploy

package deploytest

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// The mesh-wide variant's outbound connection manager, as Istio's
// generator renders it for a workload's sidecar (written by the Istio
// generator test in deploy/tools/istioctl, which make test-deploy runs
// first), runs in the real Envoy with the real sidecar: a call to an LLM
// provider's host is authenticated, gets the provider's key and is billed;
// a call to any other host never reaches the firewall.
func TestIstioSidecarDataPath(t *testing.T) {
	rendered := filepath.Join(testinfra.RepoRoot(t), ".tmp", "istio-render", "sidecar-outbound-80.json")
	raw, err := os.ReadFile(rendered)
	if err != nil {
		testinfra.Missing(t, "the rendered Istio sidecar configuration", "run `make test-deploy` (the Istio generator test writes it first)")
	}
	var hcmCfg map[string]any
	if err := json.Unmarshal(raw, &hcmCfg); err != nil {
		t.Fatal(err)
	}
	// Routes name clusters of the whole mesh; only these are served here.
	hcmCfg["routeConfig"].(map[string]any)["validateClusters"] = false
	hcmCfg["@type"] = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

	openai := &fakellm.Server{ExpectKey: "sk-mesh-openai"}
	other := &fakellm.Server{}
	addr := func(h http.Handler) string {
		s := httptest.NewServer(h)
		t.Cleanup(s.Close)
		return strings.TrimPrefix(s.URL, "http://")
	}
	openaiAddr, otherAddr := addr(openai), addr(other)

	rd := testinfra.StartRedis(t)
	providers := filepath.Join(t.TempDir(), "providers.yaml")
	os.WriteFile(providers, []byte(`providers:
  - {name: openai, format: openai, base_url: "https://api.openai.com", hosts: [api.openai.com], api_key_env: OPENAI_API_KEY}
  - {name: anthropic, format: anthropic, base_url: "https://api.anthropic.com", hosts: [api.anthropic.com], api_key_env: ANTHROPIC_API_KEY}
`), 0o600)
	side := testenv.StartSidecar(t, "INTERNAL_API_KEY=mesh-client-key", "PROVIDERS_FILE="+providers,
		"OPENAI_API_KEY=sk-mesh-openai", "ANTHROPIC_API_KEY=sk-mesh-anthropic", "REDIS_URL="+rd.URL(), "DAILY_BUDGET_LIMIT=5",
		// Every sidecar is the only proxy in the path: the firewall puts the key on (README).
		"PROVIDER_KEYS_IN_EXTPROC=true")

	cluster := func(name, hostport string, h2 bool) map[string]any {
		host, port, _ := net.SplitHostPort(hostport)
		c := map[string]any{"name": name, "type": "STATIC", "connectTimeout": "1s", "loadAssignment": map[string]any{
			"clusterName": name, "endpoints": []any{map[string]any{"lbEndpoints": []any{map[string]any{"endpoint": map[string]any{
				"address": map[string]any{"socketAddress": map[string]any{"address": host, "portValue": json.Number(port)}}}}}}}}}
		if h2 {
			c["typedExtensionProtocolOptions"] = map[string]any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": map[string]any{
				"@type":              "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
				"explicitHttpConfig": map[string]any{"http2ProtocolOptions": map[string]any{}}}}
		}
		return c
	}
	port, admin := testinfra.FreePort(t), testinfra.FreePort(t)
	boot := map[string]any{
		"admin": map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": "127.0.0.1", "portValue": admin}}},
		"staticResources": map[string]any{
			"listeners": []any{map[string]any{"name": "0.0.0.0_80",
				"address":      map[string]any{"socketAddress": map[string]any{"address": "127.0.0.1", "portValue": port}},
				"filterChains": []any{map[string]any{"filters": []any{map[string]any{"name": "envoy.filters.network.http_connection_manager", "typedConfig": hcmCfg}}}}}},
			"clusters": []any{
				cluster("outbound|80||api.openai.com", openaiAddr, false),
				cluster("outbound|80||example.test", otherAddr, false),
				cluster("outbound|50051||aifirewall.aifirewall.svc.cluster.local", side.GRPCAddr, true),
			},
		},
	}
	cfg, err := json.Marshal(boot)
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.StartEnvoyConfig(t, cfg, port, admin)

	call := func(host, key string) (int, string) {
		req, _ := http.NewRequest("POST", env.URL()+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o-mini","max_tokens":20,"messages":[{"role":"user","content":"Hi"}]}`))
		req.Host = host
		req.Header.Set("content-type", "application/json")
		req.Header.Set("x-user-id", "mesh-user")
		req.Header.Set("x-fake-prompt-tokens", "1000")
		req.Header.Set("x-fake-words", "10")
		if key != "" {
			req.Header.Set("authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, b := call("api.openai.com", ""); st != 401 {
		t.Fatalf("provider host without a key: %d %s", st, b)
	}
	if st, b := call("api.openai.com", "mesh-client-key"); st != 200 {
		t.Fatalf("provider host: %d %s", st, b)
	}
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { rdb.Close() })
	testenv.WaitSpent(t, rdb, billing.BudgetKey("mesh-user", billing.Day(time.Now(), time.UTC)), 1000*150+10*600)
	if n := len(openai.Requests()); n != 1 {
		t.Fatalf("the provider received %d requests", n)
	}

	// Another host: straight through, the firewall never sees it (the
	// client's Authorization arrives as sent, which the firewall would
	// have replaced), and nothing is billed.
	if st, b := call("example.test", "not-a-gateway-key"); st != 200 {
		t.Fatalf("other host: %d %s", st, b)
	}
	got := other.Requests()
	if len(got) != 1 || got[0].Headers.Get("Authorization") != "Bearer not-a-gateway-key" {
		t.Fatalf("the other host received %+v", got)
	}
	if strings.Contains(side.Log(), "not-a-gateway-key") || strings.Count(side.Log(), `"msg":"settled"`) != 1 {
		t.Fatal("the firewall saw the request to the other host")
	}
}
