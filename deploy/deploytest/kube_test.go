//go:build deploy

package deploytest

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/deploy/cluster"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// apiServer is a real kube-apiserver on a real etcd, for server-side
// dry-runs with strict field validation: only the apiserver catches what
// helm lint and helm template pass (a misspelt field, a probe on a plain
// init container, a negative replica count).
type apiServer struct {
	url, token string
	client     *http.Client
}

func startAPIServer(t *testing.T) *apiServer {
	t.Helper()
	etcdBin, apiBin := tool(t, "etcd"), tool(t, "kube-apiserver")
	dir := t.TempDir()
	client, peer := testinfra.FreePort(t), testinfra.FreePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	var etcdLog, apiLog testinfra.LogBuffer
	etcd := exec.Command(etcdBin, "--data-dir", filepath.Join(dir, "etcd"), "--name", "test",
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL, "--initial-cluster", "test="+peerURL)
	etcd.Stdout, etcd.Stderr = &etcdLog, &etcdLog
	if err := etcd.Start(); err != nil {
		t.Fatal(err)
	}
	testinfra.WaitTCP(t, fmt.Sprintf("127.0.0.1:%d", client), 30*time.Second)

	saKey, saPub := cluster.WriteServiceAccountKeys(t, dir)
	const token = "deploy-test-token"
	tokens := filepath.Join(dir, "tokens.csv")
	os.WriteFile(tokens, []byte(token+",admin,admin,system:masters\n"), 0o600)
	port := testinfra.FreePort(t)
	api := exec.Command(apiBin, "--etcd-servers", etcdURL, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(port), "--cert-dir", filepath.Join(dir, "certs"), "--token-auth-file", tokens,
		"--authorization-mode", "RBAC", "--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", "10.0.0.0/24", "--endpoint-reconciler-type", "none")
	api.Stdout, api.Stderr = &apiLog, &apiLog
	if err := api.Start(); err != nil {
		t.Fatal(err)
	}
	// The apiserver stops before etcd, or it spins on a lost backend.
	t.Cleanup(func() {
		api.Process.Kill()
		api.Wait()
		etcd.Process.Kill()
		etcd.Wait()
		if t.Failed() {
			t.Logf("kube-apiserver (tail):\n%s", testinfra.Tail(apiLog.String(), 30))
		}
	})
	s := &apiServer{url: fmt.Sprintf("https://127.0.0.1:%d", port), token: token, client: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // its own self-signed certificate, on loopback
	}}
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if st, _ := s.do(t, "GET", "/readyz", nil); st == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready after 90s:\n%s", testinfra.Tail(apiLog.String(), 30))
		}
	}
	// Pods need the namespace's default service account; the controllers
	// that would make it do not run here.
	if st, b := s.do(t, "POST", "/api/v1/namespaces/default/serviceaccounts", []byte(`{"metadata":{"name":"default"}}`)); st != 201 && st != 409 {
		t.Fatalf("create serviceaccount/default: %d %s", st, b)
	}
	return s
}

// saToken is a service-account token for audiences, from the API server's
// TokenRequest, as a projected volume holds it.
func (s *apiServer) saToken(t *testing.T, ns, sa string, audiences ...string) string {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"spec": map[string]any{"audiences": audiences, "expirationSeconds": 3600}})
	st, body := s.do(t, "POST", "/api/v1/namespaces/"+ns+"/serviceaccounts/"+sa+"/token", req)
	var tr struct{ Status struct{ Token string } }
	if json.Unmarshal([]byte(body), &tr); st != 201 || tr.Status.Token == "" {
		t.Fatalf("token for %s/%s: %d %s", ns, sa, st, body)
	}
	return tr.Status.Token
}

func (s *apiServer) do(t *testing.T, method, path string, body []byte) (int, string) {
	t.Helper()
	return cluster.APIRequest(s.client, s.url, s.token, method, path, string(body))
}

// resources maps the built-in kinds the manifests use to their plural
// names (namespaced); installed CRDs add theirs.
var resources = map[string]string{
	"v1/ConfigMap": "configmaps", "v1/Service": "services", "v1/Namespace": "namespaces!",
	"v1/ServiceAccount": "serviceaccounts", "v1/Pod": "pods",
	"apps/v1/Deployment": "deployments", "policy/v1/PodDisruptionBudget": "poddisruptionbudgets",
	"autoscaling/v2/HorizontalPodAutoscaler": "horizontalpodautoscalers",
	"networking.k8s.io/v1/NetworkPolicy":     "networkpolicies",
}

// path is where d is created: /api/v1/... or /apis/<group>/<version>/...
func path(t *testing.T, d doc) string {
	t.Helper()
	av, kind := fmt.Sprint(d["apiVersion"]), fmt.Sprint(d["kind"])
	plural, ok := resources[av+"/"+kind]
	if !ok {
		t.Fatalf("no API path for %s %s", av, kind)
	}
	prefix := "/apis/" + av
	if !strings.Contains(av, "/") {
		prefix = "/api/" + av
	}
	if cluster, ok := strings.CutSuffix(plural, "!"); ok {
		return prefix + "/" + cluster
	}
	ns, _ := get(d, "metadata", "namespace").(string)
	if ns == "" {
		ns = "default"
	}
	return prefix + "/namespaces/" + ns + "/" + plural
}

// dryRun creates d with dryRun=All and strict field validation.
func (s *apiServer) dryRun(t *testing.T, d doc) (int, string) {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return s.do(t, "POST", path(t, d)+"?dryRun=All&fieldValidation=Strict", b)
}

// create makes d for real (namespaces the manifests live in).
func (s *apiServer) create(t *testing.T, d doc) {
	t.Helper()
	b, _ := json.Marshal(d)
	if st, body := s.do(t, "POST", path(t, d), b); st != 201 && st != 409 {
		t.Fatalf("create %v %v: %d %s", d["kind"], get(d, "metadata", "name"), st, body)
	}
}

// installCRDs creates the CustomResourceDefinitions of a multi-document
// file, waits until each is established, and learns their API paths.
func (s *apiServer) installCRDs(t *testing.T, file string) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range splitDocs(t, file, string(raw)) {
		if d["kind"] != "CustomResourceDefinition" {
			continue
		}
		b, _ := json.Marshal(d)
		if st, body := s.do(t, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", b); st != 201 && st != 409 {
			t.Fatalf("CRD %v: %d %s", get(d, "metadata", "name"), st, testinfra.Tail(body, 5))
		}
		group, plural := get(d, "spec", "group").(string), get(d, "spec", "names", "plural").(string)
		if get(d, "spec", "scope") == "Cluster" {
			plural += "!"
		}
		for _, v := range get(d, "spec", "versions").([]any) {
			resources[group+"/"+get(v, "name").(string)+"/"+get(d, "spec", "names", "kind").(string)] = plural
		}
		name := get(d, "metadata", "name").(string)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			_, body := s.do(t, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"+name, nil)
			if strings.Contains(body, `"type":"Established","status":"True"`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not established", name)
			}
		}
	}
}

// Every manifest (the chart's, for each case of the value matrix; Envoy
// Gateway's and Istio's, with their CRDs installed) is one the apiserver
// accepts under strict validation; the mistakes helm lets through are not.
func TestManifestsAgainstKubeAPIServer(t *testing.T) {
	s := startAPIServer(t)
	// KEDA's ScaledObject, in the chart's KEDA case.
	s.installCRDs(t, moduleAt(t, kedaModule)+"/config/crd/bases/keda.sh_scaledobjects.yaml")
	t.Run("chart", func(t *testing.T) { chartAgainst(t, s) })
	t.Run("envoy-gateway", func(t *testing.T) {
		dir := moduleDir(t, "egctl", "github.com/envoyproxy/gateway") + "/charts/gateway-helm/charts/crds/crds"
		s.installCRDs(t, dir+"/gatewayapi-crds.yaml")
		files, _ := filepath.Glob(dir + "/generated/*.yaml")
		for _, f := range files {
			s.installCRDs(t, f)
		}
		meshAgainst(t, s, "deploy/envoy-gateway/llm-egress.yaml", "EnvoyExtensionPolicy", []any{"spec", "extProc", 0, "processingMode", "request"}, "bdy")
	})
	t.Run("istio", func(t *testing.T) {
		s.installCRDs(t, moduleDir(t, "istioctl", "istio.io/istio")+"/manifests/charts/base/files/crd-all.gen.yaml")
		meshAgainst(t, s, "deploy/istio/llm-egress.yaml", "VirtualService", []any{"spec", "http", 0}, "rewrit")
		meshAgainst(t, s, "deploy/istio/mesh-sidecars.yaml", "DestinationRule", []any{"spec", "trafficPolicy"}, "portLevelSetings")
		meshAgainst(t, s, "deploy/istio/registry-only.yaml", "Sidecar", []any{"spec", "outboundTrafficPolicy"}, "mdoe")
	})
}

// meshAgainst dry-runs the documents of file, then one of kind with a
// misspelt field added at at, which strict validation must refuse.
func meshAgainst(t *testing.T, s *apiServer, file, kind string, at []any, typo string) {
	docs := manifests(t, file)
	for _, d := range docs {
		if ns, _ := get(d, "metadata", "namespace").(string); ns != "" {
			s.create(t, doc{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
		}
		if st, b := s.dryRun(t, d); st != 201 {
			t.Errorf("%v %v: %d %s", d["kind"], get(d, "metadata", "name"), st, b)
		}
	}
	d := manifests(t, file)
	target := find(t, d, kind)
	get(target, at...).(map[string]any)[typo] = true
	if st, b := s.dryRun(t, target); st < 400 || !strings.Contains(b, typo) {
		t.Errorf("%s with a misspelt field %q: %d %s", kind, typo, st, b)
	}
}

// moduleDir is where a pinned tool's module sits in the module cache (its
// CRDs ship in it).
func moduleDir(t *testing.T, tool, module string) string {
	t.Helper()
	dir := filepath.Join(testinfra.RepoRoot(t), "deploy", "tools", tool)
	dl := exec.Command("go", "mod", "download", module)
	dl.Dir = dir
	if out, err := dl.CombinedOutput(); err != nil {
		t.Fatalf("go mod download %s: %v\n%s", module, err, out)
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil || len(out) == 0 {
		t.Fatalf("go list -m %s: %v", module, err)
	}
	return strings.TrimSpace(string(out))
}

// kedaModule ships the CRDs of the KEDA release the chart's ScaledObject
// is written for.
const kedaModule = "github.com/kedacore/keda/v2@v2.21.0"

// moduleAt downloads module@version (no tool builds from it) and returns
// its directory in the module cache.
func moduleAt(t *testing.T, moduleVersion string) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", moduleVersion).Output()
	var m struct{ Dir, Error string }
	if err != nil || json.Unmarshal(out, &m) != nil || m.Dir == "" {
		t.Fatalf("go mod download %s: %v %s %s", moduleVersion, err, m.Error, out)
	}
	return m.Dir
}

func chartAgainst(t *testing.T, s *apiServer) {
	for _, m := range matrix {
		docs := render(t, m.file, append(append([]string{}, base...), m.set...)...)
		for _, d := range docs {
			if d["kind"] == "ServiceMonitor" {
				continue // a Prometheus Operator CRD, absent from a bare apiserver
			}
			if strings.Contains(fmt.Sprint(d["apiVersion"]), ".istio.io/") {
				continue // Istio's CRDs come in the istio subtest, with llm-egress.yaml: this output
			}
			if ns, _ := get(d, "metadata", "namespace").(string); ns != "" {
				s.create(t, doc{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
			}
			if st, b := s.dryRun(t, d); st != 201 {
				t.Errorf("%s: %v %v: %d %s", m.name, d["kind"], get(d, "metadata", "name"), st, b)
			}
		}
	}

	// The same Deployment, broken three ways that helm renders without a word.
	fresh := func() doc {
		for _, d := range render(t, "", append(append([]string{}, base...), "mode=sidecar", "sidecar.example.enabled=true")...) {
			if d["kind"] == "Deployment" {
				return d
			}
		}
		t.Fatal("no Deployment")
		return nil
	}
	bad := []struct {
		name   string
		mutate func(d doc)
		want   string
	}{
		{"misspelt field", func(d doc) {
			c := get(d, "spec", "template", "spec", "initContainers", 1).(map[string]any)
			c["readynessProbe"] = c["readinessProbe"]
		}, `unknown field \"spec.template.spec.initContainers[1].readynessProbe\"`},
		{"probe on a plain init container", func(d doc) {
			c := get(d, "spec", "template", "spec", "initContainers", 0).(map[string]any)
			c["readinessProbe"] = map[string]any{"tcpSocket": map[string]any{"port": 1}}
		}, "readinessProbe"},
		{"negative replicas", func(d doc) { d["spec"].(map[string]any)["replicas"] = -1 }, "spec.replicas"},
	}
	for _, c := range bad {
		d := fresh()
		c.mutate(d)
		st, b := s.dryRun(t, d)
		if st < 400 || !strings.Contains(b, c.want) {
			t.Errorf("%s: %d %s, want a refusal naming %q", c.name, st, b, c.want)
		}
	}
}
