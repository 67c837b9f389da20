//go:build deploy

package deploytest

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"sigs.k8s.io/yaml"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// Envoy Gateway's own translation of deploy/envoy-gateway runs in the real
// Envoy 1.40 with the real sidecar behind it (no provider key, mutual TLS
// admitting the gateway's certificate only): workloads call the gateway by
// a path prefix per provider; a path no route takes gets 404; a request
// without a key gets 401; a streamed answer streams and is billed exactly,
// and the body the firewall rewrites (usage asked for on the client's
// behalf) reaches the provider whole, without the prefix, with the key the
// gateway puts on; the second provider, by its prefix, gets its own key,
// format and price (the route's name tells the firewall which). Envoy
// Gateway refuses loopback backends, so the provider is named openai.test
// in the resources and mapped to 127.0.0.1 when the translated xDS is turned
// into a static configuration.
func TestEnvoyGatewayDataPath(t *testing.T) {
	egctl := tool(t, "egctl")
	// One test CA signs the fake providers' certificates, the firewall's
	// (for its Service's name) and the gateway's client certificate.
	pki := testinfra.NewPKIFor(t, "", "openai.test", "anthropic.test", "aifirewall.aifirewall.svc")
	gwCert := pki.IssueClient(t, "llm-egress.aifirewall.gateway")
	cert, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	fake := func(key string) (*fakellm.Server, string) {
		up := &fakellm.Server{ExpectKey: key}
		srv := httptest.NewUnstartedServer(up)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		return up, port
	}
	up, upPort := fake("sk-eg-openai")
	ant, antPort := fake("sk-eg-anthropic")

	rd := testinfra.StartRedis(t)
	// The firewall as deploy/envoy-gateway/values.yaml runs it: no provider
	// key, ext_proc over mutual TLS admitting the gateway's identity only.
	provs := filepath.Join(t.TempDir(), "providers.yaml")
	os.WriteFile(provs, []byte(`providers:
  - {name: openai, format: openai, base_url: "https://openai.test", path_prefix: /openai}
  - {name: anthropic, format: anthropic, base_url: "https://anthropic.test", path_prefix: /anthropic}
`), 0o600)
	side := testenv.StartSidecar(t, "INTERNAL_API_KEY=eg-client-key", "PROVIDERS_FILE="+provs,
		"REDIS_URL="+rd.URL(), "DAILY_BUDGET_LIMIT=5", "EXTPROC_TLS_CERT_FILE="+pki.CertFile, "EXTPROC_TLS_KEY_FILE="+pki.KeyFile,
		"EXTPROC_TLS_CLIENT_CA_FILE="+pki.CAFile, "EXTPROC_TLS_ALLOWED_CLIENTS="+chartValue(t, "../envoy-gateway/values.yaml", "extproc", "tls", "allowedClients"))

	// The README's resources, the providers renamed, and what its comments
	// ask for (egressInput).
	raw, err := os.ReadFile(filepath.Join(testinfra.RepoRoot(t), "deploy/envoy-gateway/llm-egress.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	res := strings.NewReplacer("api.openai.com, port: 443}", "openai.test, port: "+upPort+"}",
		"api.anthropic.com, port: 443}", "anthropic.test, port: "+antPort+"}",
		"name: openai, port: 443}", "name: openai, port: "+upPort+"}",
		"name: anthropic, port: 443}", "name: anthropic, port: "+antPort+"}",
		"api.openai.com", "openai.test", "api.anthropic.com", "anthropic.test").Replace(string(raw))
	res = egressInput(res, pki, gwCert)
	in := filepath.Join(t.TempDir(), "in.yaml")
	os.WriteFile(in, []byte(res), 0o600)
	xds, err := exec.Command(egctl, "x", "translate", "--from", "gateway-api", "--to", "xds", "-t", "all", "-f", in,
		"-n", "aifirewall", "-o", "json").Output()
	if err != nil {
		t.Fatalf("egctl x translate: %v", err)
	}
	port, admin := testinfra.FreePort(t), testinfra.FreePort(t)
	// The secrets Envoy Gateway would serve over SDS, given statically.
	secrets := map[string]any{
		"credential_injector/credential/httproutefilter/aifirewall/openai-key":    genericSecret("Bearer sk-eg-openai"),
		"credential_injector/credential/httproutefilter/aifirewall/anthropic-key": genericSecret("sk-eg-anthropic"),
		"aifirewall/llm-egress-client-tls": map[string]any{"tlsCertificate": map[string]any{
			"certificateChain": map[string]any{"filename": gwCert.CertFile}, "privateKey": map[string]any{"filename": gwCert.KeyFile}}},
	}
	cfg := staticBootstrap(t, xds, port, admin, pki.CAFile, secrets, map[string]string{
		"openai.test": "127.0.0.1", "anthropic.test": "127.0.0.1", "10.96.0.50:50051": side.GRPCAddr})
	env := testenv.StartEnvoyConfig(t, cfg, port, admin)
	base := env.URL()

	// Workloads call the gateway's Service by its in-cluster name, a path
	// prefix per provider.
	const gwHost = "llm-egress.aifirewall.svc"
	noKey, _ := http.NewRequest("POST", base+"/openai/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o-mini","messages":[]}`))
	noKey.Host = gwHost
	noKey.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(noKey)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("no key: %d, want 401", resp.StatusCode)
	}

	// A path no route takes fails closed at the gateway.
	stray, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o-mini","messages":[]}`))
	stray.Host = gwHost
	stray.Header.Set("authorization", "Bearer eg-client-key")
	if resp, err := http.DefaultClient.Do(stray); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != 404 {
		t.Fatalf("a path no route takes: %d, want 404", resp.StatusCode)
	}

	req, _ := http.NewRequest("POST", base+"/openai/v1/chat/completions", strings.NewReader(
		`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello!"}]}`))
	req.Host = gwHost
	for k, v := range map[string]string{"authorization": "Bearer eg-client-key", "content-type": "application/json",
		"x-user-id": "eg-user", "x-fake-prompt-tokens": "1000", "x-fake-words": "10"} {
		req.Header.Set(k, v)
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("streamed request: %d", resp.StatusCode)
	}
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || line == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
			Usage any `json:"usage"`
		}
		json.Unmarshal([]byte(line), &chunk)
		if chunk.Usage != nil {
			t.Fatal("the usage the firewall asked for reached a client that did not ask for it")
		}
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if text.String() != fakellm.Answer(10) {
		t.Fatalf("answer %q", text.String())
	}
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { rdb.Close() })
	testenv.WaitSpent(t, rdb, billing.BudgetKey("eg-user", billing.Day(time.Now(), time.UTC)), 1000*150+10*600)

	// What the provider received: its own key, the rewritten body whole.
	got := up.Requests()
	if len(got) != 1 {
		t.Fatalf("the provider received %d requests", len(got))
	}
	r := got[0]
	if r.Path != "/v1/chat/completions" {
		t.Fatalf("the provider received path %q: the gateway's prefix must be gone", r.Path)
	}
	if !strings.Contains(r.Body, `"include_usage":true`) || !json.Valid([]byte(r.Body)) {
		t.Fatalf("the provider received %q", r.Body)
	}
	if cl := r.Headers.Get("Content-Length"); cl != "" && cl != fmt.Sprint(len(r.Body)) {
		t.Fatalf("content-length %s for a body of %d bytes", cl, len(r.Body))
	}
	t.Logf("rewritten body of %d bytes reached the provider with content-length %q (empty: chunked)",
		len(r.Body), r.Headers.Get("Content-Length"))

	// The other provider, by its host: its own route, key, format and price
	// (claude-haiku-4-5: $1 in, $5 out per million tokens).
	req, _ = http.NewRequest("POST", base+"/anthropic/v1/messages", strings.NewReader(
		`{"model":"claude-haiku-4-5","max_tokens":50,"messages":[{"role":"user","content":"Hello!"}]}`))
	req.Host = gwHost
	for k, v := range map[string]string{"x-api-key": "eg-client-key", "content-type": "application/json",
		"x-user-id": "eg-claude", "x-fake-prompt-tokens": "1000", "x-fake-words": "10"} {
		req.Header.Set(k, v)
	}
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != 200 || len(ant.Requests()) != 1 || len(up.Requests()) != 1 {
		t.Fatalf("anthropic by host: %d; requests: anthropic %d, openai %d", resp2.StatusCode, len(ant.Requests()), len(up.Requests()))
	}
	testenv.WaitSpent(t, rdb, billing.BudgetKey("eg-claude", billing.Day(time.Now(), time.UTC)), 1000*1000+10*5000)
}

// egressInput adds to the Envoy Gateway resources what the file's comments
// ask the operator to create (the providers' key Secrets, the gateway's
// client certificate, the ConfigMap with the firewall's CA) and the chart's
// extproc Service as the apiserver would hold it.
func egressInput(res string, pki *testinfra.PKI, gw testinfra.ClientCert) string {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	read := func(f string) string { b, _ := os.ReadFile(f); return string(b) }
	caPEM, _ := json.Marshal(read(pki.CAFile))
	return res + "---\napiVersion: v1\nkind: Service\nmetadata: {name: aifirewall, namespace: aifirewall}\nspec:\n  clusterIP: 10.96.0.50\n" +
		"  ports:\n    - {name: grpc, port: 50051, targetPort: grpc, appProtocol: grpc}\n" +
		"---\napiVersion: v1\nkind: Secret\nmetadata: {name: openai-key, namespace: aifirewall}\ndata: {credential: " + b64("Bearer sk-eg-openai") + "}\n" +
		"---\napiVersion: v1\nkind: Secret\nmetadata: {name: anthropic-key, namespace: aifirewall}\ndata: {credential: " + b64("sk-eg-anthropic") + "}\n" +
		"---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {name: llm-egress-client-tls, namespace: aifirewall}\n" +
		"data: {tls.crt: " + b64(read(gw.CertFile)) + ", tls.key: " + b64(read(gw.KeyFile)) + "}\n" +
		"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: aifirewall-extproc-ca, namespace: aifirewall}\ndata: {ca.crt: " + string(caPEM) + "}\n"
}

func genericSecret(v string) map[string]any {
	return map[string]any{"genericSecret": map[string]any{"secret": map[string]any{"inlineString": v}}}
}

// staticBootstrap turns egctl's xDS dump into a configuration Envoy starts
// from: its gateway listeners on 127.0.0.1:port with their route tables
// inlined, its clusters with their endpoints inlined (addresses remapped),
// and the system CA bundle (served by SDS in a real deployment) replaced by
// caFile.
func staticBootstrap(t *testing.T, dump []byte, port, admin int, caFile string, secrets map[string]any, remap map[string]string) []byte {
	t.Helper()
	var d struct {
		XDS map[string]struct {
			Configs []map[string]any `json:"configs"`
		} `json:"xds"`
	}
	if err := json.Unmarshal(dump, &d); err != nil {
		t.Fatal(err)
	}
	var listeners, clusters []any
	routes, endpoints := map[string]any{}, map[string]any{}
	for _, gw := range d.XDS {
		for _, c := range gw.Configs {
			switch typ := c["@type"].(string); {
			case strings.HasSuffix(typ, "RoutesConfigDump"):
				for _, r := range c["dynamicRouteConfigs"].([]any) {
					rc := get(r, "routeConfig").(map[string]any)
					delete(rc, "@type")
					routes[rc["name"].(string)] = rc
				}
			case strings.HasSuffix(typ, "EndpointsConfigDump"):
				for _, e := range c["dynamicEndpointConfigs"].([]any) {
					la := get(e, "endpointConfig").(map[string]any)
					delete(la, "@type")
					endpoints[la["clusterName"].(string)] = la
				}
			case strings.HasSuffix(typ, "ListenersConfigDump"):
				for _, l := range c["dynamicListeners"].([]any) {
					lis := get(l, "activeState", "listener").(map[string]any)
					if strings.HasPrefix(lis["name"].(string), "envoy-gateway-proxy-") {
						continue // Envoy Gateway's own stats and readiness listeners
					}
					delete(lis, "@type")
					lis["address"] = map[string]any{"socketAddress": map[string]any{"address": "127.0.0.1", "portValue": port}}
					listeners = append(listeners, lis)
				}
			case strings.HasSuffix(typ, "ClustersConfigDump"):
				for _, c := range c["dynamicActiveClusters"].([]any) {
					cl := get(c, "cluster").(map[string]any)
					delete(cl, "@type")
					clusters = append(clusters, cl)
				}
			}
		}
	}
	for _, c := range clusters {
		cl := c.(map[string]any)
		if cl["type"] == "EDS" {
			delete(cl, "edsClusterConfig")
			cl["loadAssignment"] = endpoints[cl["name"].(string)]
		}
		delete(cl, "clusterType")
		cl["type"] = "STATIC"
	}
	var fix func(v any) any
	fix = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			if name, ok := x["name"].(string); ok && x["sdsConfig"] != nil && secrets[name] != nil {
				delete(x, "sdsConfig") // a static secret of that name
			}
			if rds, ok := x["rds"].(map[string]any); ok {
				delete(x, "rds")
				x["routeConfig"] = routes[rds["routeConfigName"].(string)]
			}
			if cv, ok := x["combinedValidationContext"].(map[string]any); ok {
				delete(x, "combinedValidationContext")
				vc, _ := cv["defaultValidationContext"].(map[string]any)
				if vc == nil {
					vc = map[string]any{}
				}
				vc["trustedCa"] = map[string]any{"filename": caFile}
				x["validationContext"] = vc
			}
			if sa, ok := x["socketAddress"].(map[string]any); ok {
				hostport := fmt.Sprintf("%v:%v", sa["address"], sa["portValue"])
				if to, ok := remap[hostport]; ok {
					h, p, _ := net.SplitHostPort(to)
					sa["address"], sa["portValue"] = h, json.Number(p)
				} else if to, ok := remap[fmt.Sprint(sa["address"])]; ok {
					sa["address"] = to
				}
			}
			for k, e := range x {
				x[k] = fix(e)
			}
		case []any:
			for i, e := range x {
				x[i] = fix(e)
			}
		}
		return v
	}
	var static []any
	for name, sec := range secrets {
		s := map[string]any{"name": name}
		for k, v := range sec.(map[string]any) {
			s[k] = v
		}
		static = append(static, s)
	}
	boot := map[string]any{
		"admin":           map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": "127.0.0.1", "portValue": admin}}},
		"staticResources": fix(map[string]any{"listeners": listeners, "clusters": clusters, "secrets": static}),
	}
	b, err := json.Marshal(boot)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// chartValue reads a list from a values file (relative to deploy/deploytest)
// and joins it with commas, as the chart passes it to the firewall.
func chartValue(t *testing.T, file string, path ...any) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testinfra.RepoRoot(t), "deploy", "deploytest", file))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range get(v, path...).([]any) {
		out = append(out, fmt.Sprint(e))
	}
	return strings.Join(out, ",")
}
