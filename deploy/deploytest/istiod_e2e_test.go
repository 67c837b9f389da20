//go:build deploy

package deploytest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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

// istiod itself (pilot-discovery) reads the mesh from the test's
// kube-apiserver (Istio's CRDs, deploy/istio/llm-egress.yaml and
// registry-only.yaml as shipped, and the Services, EndpointSlices, Pods and
// service accounts a cluster would hold, made by the test) and programs the
// egress gateway: Istio's node agent (pilot-agent, with the bootstrap
// template the istio-proxy image ships) gets the gateway's certificate from
// istiod's CA with the gateway's service-account token and starts the real
// Envoy, which takes its listeners, routes, clusters and secrets from
// istiod over xDS and SDS. A workload with a certificate istiod issued for
// its service account calls a provider through the gateway over mutual TLS,
// as its sidecar would: the firewall (behind the gateway's ext_proc) bills
// the workload's SPIFFE ID, the provider receives the key the firewall
// hands the gateway, and a caller without a mesh certificate is refused.
//
// The gateway binds every address and fixed ports, so the agent and its
// Envoy run in a network namespace of the test's; istiod, the firewall and
// the TLS fake provider listen on the host's end of its veth pair, whose
// address the namespace's hosts file gives istiod's and the providers'
// names; the namespace's system CA bundle is the test CA (the provider's
// DestinationRule checks against that file).
func TestIstiodProgramsTheEgressGateway(t *testing.T) {
	discovery, agent := tool(t, "pilot-discovery"), tool(t, "pilot-agent")
	envoyBin := testenv.EnvoyBinary(t)
	ns := testinfra.NewNetns(t, "aifw-mesh", "10.216.0")
	istio := moduleDir(t, "istioctl", "istio.io/istio")

	s := startAPIServer(t)
	s.installCRDs(t, istio+"/manifests/charts/base/files/crd-all.gen.yaml")
	m := newMesh(t, s, ns, "apps/chatbot", "ci/runner")

	// The provider, under its own name, with a certificate of the test CA.
	pki := testinfra.NewPKIFor(t, "", "api.openai.com", "api.anthropic.com")
	ca, _ := os.ReadFile(pki.CAFile)
	ns.WriteEtc(t, "hosts", "127.0.0.1 localhost\n"+ns.HostIP+" istiod.istio-system.svc api.openai.com api.anthropic.com\n")
	ns.WriteEtc(t, "ssl/certs/ca-certificates.crt", string(ca))
	up := &fakellm.Server{ExpectKey: "sk-mesh-openai"}
	serveTLS(t, ns.HostIP+":443", pki, map[string]http.Handler{"api.openai.com": up})

	// The firewall as deploy/istio/values.yaml runs it: workloads known by
	// their SPIFFE ID, the provider keys handed to the gateway. Its own
	// sidecar (the mesh's mutual TLS in front of it) is not run here: the
	// gateway reaches it in plain gRPC on the veth pair.
	rd := testinfra.StartRedis(t)
	provs := filepath.Join(t.TempDir(), "providers.yaml")
	os.WriteFile(provs, []byte(valuesProviders(t, "../istio/values.yaml")), 0o600)
	testenv.StartSidecar(t, "PROVIDERS_FILE="+provs, "REDIS_URL="+rd.URL(), "DAILY_BUDGET_LIMIT=5",
		"IDENTITY_MODE=mesh", "TRUST_XFCC=true", "EXTPROC_AUTHENTICATED_BY_MESH=true", "PROVIDER_KEYS_IN_EXTPROC=true",
		"OPENAI_API_KEY=sk-mesh-openai", "ANTHROPIC_API_KEY=sk-mesh-anthropic", "LISTEN_ADDR="+ns.HostIP+":50051")

	for _, f := range []string{"deploy/istio/llm-egress.yaml", "deploy/istio/registry-only.yaml"} {
		for _, d := range manifests(t, f) {
			s.create(t, d)
		}
	}

	rootPEM := startIstiod(t, discovery, s, ns)
	root := x509.NewCertPool()
	root.AppendCertsFromPEM([]byte(rootPEM))
	gw := m.startGateway(t, agent, envoyBin, istio, rootPEM)

	// A workload's certificate, from istiod's CA for its service account.
	wl := m.workloadCert(t, "apps", "chatbot", root)
	id := "spiffe://cluster.local/ns/apps/sa/chatbot"

	// The gateway's listener is up once istiod has pushed it.
	client := func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{ServerName: "api.openai.com", RootCAs: root, NextProtos: []string{"http/1.1"},
			// As a sidecar does: the gateway's certificate is a SPIFFE
			// one (no DNS name), checked by its identity.
			InsecureSkipVerify: true, VerifyPeerCertificate: verifySPIFFE(root, gatewayID)}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	call := func(c *http.Client, body string, hdr map[string]string) (*http.Response, error) {
		req, _ := http.NewRequest("POST", "https://"+ns.IP+":80/v1/chat/completions", strings.NewReader(body))
		req.Host = "api.openai.com"
		req.Header.Set("content-type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		return c.Do(req)
	}
	ok := client(wl)
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		resp, err = call(ok, `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello!"}]}`,
			map[string]string{"x-fake-prompt-tokens": "1000", "x-fake-words": "10"})
		if err == nil && resp.StatusCode != 404 && resp.StatusCode != 503 {
			break
		}
		if err == nil {
			resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never served the provider's route: %v %v\nagent (tail):\n%s", err, resp, testinfra.Tail(gw.String(), 60))
		}
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("the workload's streamed request: %d %s", resp.StatusCode, b)
	}
	if text, _ := chatText(resp.Body); text != fakellm.Answer(10) {
		t.Fatalf("answer %q", text)
	}
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { rdb.Close() })
	testenv.WaitSpent(t, rdb, billing.BudgetKey(id, billing.Day(time.Now(), time.UTC)), 1000*150+10*600)
	got := up.Requests()
	if len(got) != 1 || got[0].Headers.Get("Authorization") != "Bearer sk-mesh-openai" {
		t.Fatalf("the provider received %d requests (%+v)", len(got), got)
	}

	// The providers file's policy, by the SPIFFE ID istiod's certificate
	// carries: the CI runners may call the cheap models only.
	ci := client(m.workloadCert(t, "ci", "runner", root))
	for model, want := range map[string]int{"gpt-4o": 403, "gpt-4o-mini": 200} {
		resp, err := call(ci, `{"model":"`+model+`","messages":[{"role":"user","content":"Hi"}]}`, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("ci/runner asking for %s: %d %s, want %d", model, resp.StatusCode, b, want)
		}
	}
	if n := len(up.Requests()); n != 2 {
		t.Fatalf("the provider received %d requests, want 2", n)
	}

	// Without a mesh certificate the gateway does not take the connection.
	if resp, err := call(client(nil), `{"model":"gpt-4o-mini","messages":[]}`, nil); err == nil {
		resp.Body.Close()
		t.Fatalf("a caller without a mesh certificate got %d", resp.StatusCode)
	}
	if n := len(up.Requests()); n != 2 {
		t.Fatalf("the provider received %d requests, want 2", n)
	}
}

// valuesProviders is the providers file a values file gives the chart.
func valuesProviders(t *testing.T, file string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testinfra.RepoRoot(t), "deploy", "deploytest", file))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(get(v, "providers"))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// serveTLS answers each of hosts by its name on addr (another name gets
// 421, as a CDN in front of a provider answers).
func serveTLS(t *testing.T, addr string, pki *testinfra.PKI, hosts map[string]http.Handler) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, ok := hosts[r.Host]
		if !ok {
			http.Error(w, "misdirected request: "+r.Host, http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// startIstiod runs pilot-discovery against s: its plain and secure xDS
// (with its CA) on the host's end of ns's pair, everything else on
// loopback. It returns istiod's root certificate (PEM), as it publishes it
// in every namespace (ConfigMap istio-ca-root-cert).
func startIstiod(t *testing.T, bin string, s *apiServer, ns *testinfra.Netns) string {
	t.Helper()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, s.url, s.token)), 0o600)
	// The mesh's defaults but for telemetry: its default metrics provider
	// puts istio-proxy's own stats filter (istio.stats) on every listener,
	// which the upstream Envoy here does not have.
	mesh := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(mesh, []byte("trustDomain: cluster.local\nrootNamespace: istio-system\ndefaultProviders: {metrics: []}\n"+
		"defaultConfig: {discoveryAddress: istiod.istio-system.svc:15012}\n"), 0o600)
	addr := func() string { return fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t)) }
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "discovery", "--kubeconfig", kubeconfig, "--meshConfig", mesh,
		"--networksConfig", filepath.Join(dir, "none"), "--clusterID", "Kubernetes", "--domain", "cluster.local",
		"--grpcAddr", addr(), "--secureGRPCAddr", ns.HostIP+":15012", "--httpAddr", addr(), "--httpsAddr", addr(),
		"--monitoringAddr", addr(), "--ctrlz_port", fmt.Sprint(testinfra.FreePort(t)), "--log_output_level", "default:info")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "POD_NAMESPACE=istio-system", "POD_NAME=istiod-test", "REVISION=default",
		"KUBECONFIG="+kubeconfig, "PILOT_CERT_PROVIDER=istiod",
		// istio-proxy's own filters, which the upstream Envoy here does not
		// have: metadata exchange between proxies (istio.metadata_exchange,
		// for telemetry) and the ALPN override (istio.alpn, which tells an
		// upstream sidecar the protocol it would otherwise sniff).
		"PILOT_ENABLE_METADATA_EXCHANGE=false", "PILOT_ENABLE_ALPN_FILTER=false", "INJECTION_WEBHOOK_CONFIG_NAME=", "VALIDATION_WEBHOOK_CONFIG_NAME=")
	log := start(t, "istiod", cmd, cancel)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		st, body := s.do(t, "GET", "/api/v1/namespaces/istio-system/configmaps/istio-ca-root-cert", nil)
		if st == 200 {
			var cm struct{ Data map[string]string }
			json.Unmarshal([]byte(body), &cm)
			if pem := cm.Data["root-cert.pem"]; x509.NewCertPool().AppendCertsFromPEM([]byte(pem)) {
				return pem
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("istiod published no root certificate:\n%s", testinfra.Tail(log.String(), 40))
		}
	}
}
