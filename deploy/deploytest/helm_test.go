//go:build deploy

// Package deploytest checks the deployment artefacts with the real tools
// that consume them (`make test-deploy`): helm, and Envoy for the
// configuration the chart's init container writes.
package deploytest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/aifirewall/aifirewall/budgets"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

var update = flag.Bool("update", false, "rewrite deploy/kubernetes/sidecar-pod-snippet.yaml from the chart")

const kubeVersion = "1.37.2"

func tool(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(testinfra.RepoRoot(t), ".tools", "bin", name)
	if _, err := os.Stat(p); err != nil {
		testinfra.Missing(t, name, "run `make tools` (builds the pinned tools into .tools/bin)")
	}
	return p
}

func chartDir(t *testing.T) string {
	return filepath.Join(testinfra.RepoRoot(t), "deploy", "helm", "aifirewall")
}

// base are the values every release needs.
var base = []string{"secret.name=aifirewall", "redis.url=redis://redis:6379/0"}

type doc = map[string]any

// render runs helm template with --set values (and a values file when
// file is not empty) and returns the manifests.
func render(t *testing.T, file string, set ...string) []doc {
	t.Helper()
	out, err := helm(t, "template", file, set...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", set, err, out)
	}
	return splitDocs(t, "rendered YAML", out)
}

// splitDocs decodes a multi-document YAML stream (empty documents left out).
func splitDocs(t *testing.T, name, raw string) []doc {
	t.Helper()
	var docs []doc
	for _, part := range strings.Split(raw, "\n---") {
		var d doc
		if err := yaml.Unmarshal([]byte(part), &d); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, part)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

func helm(t *testing.T, cmd, file string, set ...string) (string, error) {
	args := []string{cmd}
	if cmd == "template" {
		args = append(args, "aifirewall")
	}
	args = append(args, chartDir(t), "--kube-version", kubeVersion)
	if cmd == "lint" {
		args = append(args, "--strict")
	}
	if file != "" {
		args = append(args, "-f", file)
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := exec.Command(tool(t, "helm"), args...).CombinedOutput()
	return string(out), err
}

// get walks a decoded document: get(d, "spec", "template", "spec").
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func kinds(docs []doc) []string {
	var out []string
	for _, d := range docs {
		out = append(out, fmt.Sprint(d["kind"]))
	}
	return out
}

func find(t *testing.T, docs []doc, kind string) doc {
	t.Helper()
	for _, d := range docs {
		if d["kind"] == kind {
			return d
		}
	}
	t.Fatalf("no %s among %v", kind, kinds(docs))
	return nil
}

func container(t *testing.T, list any, name string) map[string]any {
	t.Helper()
	for _, c := range list.([]any) {
		if m := c.(map[string]any); m["name"] == name {
			return m
		}
	}
	t.Fatalf("no container %s", name)
	return nil
}

func envOf(c map[string]any) map[string]any {
	env := map[string]any{}
	for _, e := range c["env"].([]any) {
		m := e.(map[string]any)
		if m["value"] != nil {
			env[m["name"].(string)] = m["value"]
		} else {
			env[m["name"].(string)] = m["valueFrom"]
		}
	}
	return env
}

// extprocTLS is the extproc mode with mutual TLS on its port.
var extprocTLS = []string{"mode=extproc", "extproc.tls.secretName=aifirewall-extproc-tls",
	"extproc.tls.allowedClients={spiffe://cluster.local/ns/envoy-gateway-system/*}"}

// The value matrix: each lints strictly and renders what its mode needs.
var matrix = []struct {
	name  string
	file  string
	set   []string
	kinds string
}{
	{"gateway defaults", "", nil, "NetworkPolicy PodDisruptionBudget ServiceAccount Service Deployment HorizontalPodAutoscaler Pod"},
	{"gateway, scaling on open streams", "", []string{"gateway.autoscaling.openStreamsPerPod=5000"},
		"NetworkPolicy PodDisruptionBudget ServiceAccount Service Deployment HorizontalPodAutoscaler Pod"},
	{"gateway, KEDA on CPU and open streams", "", []string{"gateway.autoscaling.keda.enabled=true", "gateway.autoscaling.openStreamsPerPod=3000",
		"gateway.autoscaling.keda.prometheusAddress=http://prometheus-operated.monitoring.svc:9090"},
		"NetworkPolicy PodDisruptionBudget ServiceAccount Service Deployment ScaledObject Pod"},
	{"gateway, providers file", "testdata/providers-values.yaml", nil, "NetworkPolicy PodDisruptionBudget ServiceAccount ConfigMap Service Deployment HorizontalPodAutoscaler Pod"},
	{"gateway, fixed replicas, no policy objects, ServiceMonitor, Redis CA", "",
		[]string{"gateway.autoscaling.enabled=false", "gateway.replicas=3", "gateway.networkPolicy.enabled=false",
			"gateway.podDisruptionBudget.enabled=false", "gateway.serviceMonitor.enabled=true", "redis.caConfigMap=redis-ca",
			"redis.url=rediss://:$(REDIS_PASSWORD)@redis:6380/0"}, "ServiceAccount Service Deployment ServiceMonitor Pod"},
	{"extproc", "", extprocTLS, "NetworkPolicy PodDisruptionBudget ServiceAccount Service Deployment HorizontalPodAutoscaler Pod"},
	{"extproc, providers file", "testdata/providers-values.yaml", extprocTLS, "NetworkPolicy PodDisruptionBudget ServiceAccount ConfigMap Service Deployment HorizontalPodAutoscaler Pod"},
	{"extproc, behind a mesh, mesh identities", "", []string{"mode=extproc", "extproc.authenticatedByMesh=true", "identityMode=mesh", "trustXFCC=true"},
		"NetworkPolicy PodDisruptionBudget ServiceAccount Service Deployment HorizontalPodAutoscaler Pod"},
	{"extproc, Envoy Gateway's values", "../envoy-gateway/values.yaml", nil, "NetworkPolicy PodDisruptionBudget ServiceAccount ConfigMap Service Deployment HorizontalPodAutoscaler Pod"},
	{"extproc, Istio's values", "../istio/values.yaml", nil, "NetworkPolicy PodDisruptionBudget ServiceAccount ConfigMap Service Deployment HorizontalPodAutoscaler " +
		"AuthorizationPolicy DestinationRule DestinationRule DestinationRule EnvoyFilter Gateway PeerAuthentication ServiceEntry ServiceEntry VirtualService VirtualService Pod"},
	{"extproc, Istio's every-sidecar values", "../istio/values-mesh-sidecars.yaml", nil, "NetworkPolicy PodDisruptionBudget ServiceAccount ConfigMap Service Deployment HorizontalPodAutoscaler " +
		"AuthorizationPolicy DestinationRule DestinationRule EnvoyFilter PeerAuthentication ServiceEntry Pod"},
	{"gateway, workloads confined", "", []string{"workloadEgress.namespaces={apps,ci}", "workloadEgress.extraTo[0].ipBlock.cidr=10.0.0.1/32"},
		"NetworkPolicy NetworkPolicy NetworkPolicy PodDisruptionBudget ServiceAccount Service Deployment HorizontalPodAutoscaler Pod"},
	{"gateway, budgets", "testdata/budgets-values.yaml", nil,
		"NetworkPolicy PodDisruptionBudget ServiceAccount ConfigMap Service Deployment HorizontalPodAutoscaler Pod"},
	{"gateway, identities from service-account tokens", "", []string{"identityMode=jwt", "jwt.issuer=https://kubernetes.default.svc",
		"jwt.audiences={aifirewall}", "jwt.jwksConfigMap=cluster-jwks", "jwt.groupsClaim=kubernetes.io.namespace"},
		"NetworkPolicy PodDisruptionBudget ServiceAccount Service Deployment HorizontalPodAutoscaler Pod"},
	{"gateway, PostgreSQL ledger", "", []string{"ledger.urlSecretKey=ledger-url"},
		"NetworkPolicy PodDisruptionBudget ServiceAccount Service Deployment HorizontalPodAutoscaler Pod"},
	{"gateway, Grafana dashboard", "", []string{"grafanaDashboard.enabled=true"},
		"NetworkPolicy PodDisruptionBudget ServiceAccount ConfigMap Service Deployment HorizontalPodAutoscaler Pod"},
	{"sidecar", "", []string{"mode=sidecar"}, ""},
	{"sidecar, example", "", []string{"mode=sidecar", "sidecar.example.enabled=true"}, "Deployment"},
	{"sidecar, providers file, example", "testdata/providers-values.yaml", []string{"mode=sidecar", "sidecar.example.enabled=true"}, "ConfigMap Deployment"},
}

func TestChartMatrix(t *testing.T) {
	for _, m := range matrix {
		t.Run(m.name, func(t *testing.T) {
			set := append(append([]string{}, base...), m.set...)
			if out, err := helm(t, "lint", m.file, set...); err != nil {
				t.Fatalf("helm lint --strict: %v\n%s", err, out)
			}
			docs := render(t, m.file, set...)
			if got := strings.Join(kinds(docs), " "); got != m.kinds {
				t.Fatalf("kinds %q, want %q", got, m.kinds)
			}
			for _, d := range docs {
				if d["kind"] == "Deployment" {
					checkPod(t, get(d, "spec", "template", "spec").(map[string]any), strings.Fields(strings.Trim(m.name, ","))[0])
				}
			}
		})
	}
}

// checkPod holds a pod spec to what a platform team expects of it.
func checkPod(t *testing.T, pod map[string]any, mode string) {
	t.Helper()
	mode = strings.TrimSuffix(mode, ",")
	sidecar := mode == "sidecar"
	if get(pod, "securityContext", "runAsNonRoot") != true || get(pod, "automountServiceAccountToken") != false {
		t.Error("pod must run as non-root without a service account token")
	}
	inits, _ := pod["initContainers"].([]any)
	mains, _ := pod["containers"].([]any)
	firewallIn, envoyIn := mains, mains
	if sidecar {
		firewallIn, envoyIn = inits, inits
		// Native sidecars: the config writer first, then the two that stay.
		var order []string
		for _, c := range inits {
			order = append(order, fmt.Sprint(get(c, "name"), "/", get(c, "restartPolicy")))
		}
		if got := strings.Join(order, " "); got != "envoy-config/<nil> aifirewall/Always envoy/Always" {
			t.Errorf("init containers: %s", got)
		}
	}
	for _, c := range append(append([]any{}, inits...), mains...) {
		sc := get(c, "securityContext")
		if get(sc, "readOnlyRootFilesystem") != true || get(sc, "allowPrivilegeEscalation") != false ||
			fmt.Sprint(get(sc, "capabilities", "drop")) != "[ALL]" || get(sc, "runAsNonRoot") != true {
			t.Errorf("container %v securityContext: %v", get(c, "name"), sc)
		}
		if get(c, "resources", "requests", "memory") == nil {
			t.Errorf("container %v has no memory request", get(c, "name"))
		}
	}
	fw := container(t, firewallIn, "aifirewall")
	env := envOf(fw)
	if _, literal := env["INTERNAL_API_KEY"].(string); literal || env["SHUTDOWN_TIMEOUT"] != "30s" {
		t.Errorf("INTERNAL_API_KEY must come from the Secret, SHUTDOWN_TIMEOUT from the values: %v", env)
	}
	// The sidecar holds no provider key: not in its environment, and the
	// Secret is not mounted in it.
	if env["PROVIDER_KEYS_IN_EXTPROC"] == nil {
		for name := range env {
			if strings.HasSuffix(name, "_API_KEY") && name != "INTERNAL_API_KEY" {
				t.Errorf("the aifirewall container gets %s", name)
			}
		}
		if mounts(fw)["provider-keys"] {
			t.Error("the aifirewall container mounts the provider keys")
		}
	}
	if mode == "extproc" {
		// The aifirewall alone, serving ext_proc to proxies on the network,
		// over mutual TLS or behind a mesh that authenticates them.
		if len(mains) != 1 || len(inits) != 0 || env["LISTEN_ADDR"] != "0.0.0.0:50051" || get(fw, "readinessProbe", "httpGet", "path") != "/readyz" {
			t.Errorf("extproc pod: %d containers, %d init containers, LISTEN_ADDR %v", len(mains), len(inits), env["LISTEN_ADDR"])
		}
		if env["EXTPROC_AUTHENTICATED_BY_MESH"] != "true" && (env["EXTPROC_TLS_CERT_FILE"] == nil || env["EXTPROC_TLS_ALLOWED_CLIENTS"] == "" || !mounts(fw)["extproc-tls"]) {
			t.Errorf("extproc pod: its port is open to anyone: %v", env)
		}
		return
	}
	ev := container(t, envoyIn, "envoy")
	// Envoy holds the provider keys: the Secret's variables and its mount.
	if !mounts(ev)["provider-keys"] || !mounts(container(t, inits, "envoy-config"))["provider-keys"] {
		t.Error("Envoy and envoy-config must mount the provider keys")
	}
	for name := range envOf(container(t, inits, "envoy-config")) {
		if strings.HasSuffix(name, "_API_KEY") && envOf(ev)[name] == nil {
			t.Errorf("envoy-config checks %s, which Envoy does not get", name)
		}
	}
	if get(fw, "readinessProbe", "httpGet", "path") != "/readyz" || get(ev, "readinessProbe", "httpGet", "path") != "/ready" ||
		get(ev, "readinessProbe", "httpGet", "port") != float64(9902) {
		t.Error("readiness must follow the sidecar's /readyz and Envoy's /ready")
	}
	// Envoy outlives the sidecar's drain on SIGTERM, and the pod's grace
	// period outlives both.
	grace := get(pod, "terminationGracePeriodSeconds").(float64)
	envoyStop := get(ev, "lifecycle", "preStop", "sleep", "seconds").(float64)
	if grace < 30+5 || (!sidecar && envoyStop < 30) || envoyStop >= grace {
		t.Errorf("grace %v s, Envoy preStop %v s, shutdown 30 s", grace, envoyStop)
	}
}

// What a platform team sets on day one reaches the manifests: a
// ServiceAccount of its naming with annotations, pod labels, the labels its
// Prometheus selects ServiceMonitors by, security contexts without the
// fixed uid (OpenShift's restricted SCC assigns one), an image registry,
// and a helm test pod calling the release.
func TestChartPlatformValues(t *testing.T) {
	docs := render(t, "", append(append([]string{}, base...), "serviceAccount.name=llm-gw",
		"serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/x", "podLabels.team=platform",
		"gateway.serviceMonitor.enabled=true", "gateway.serviceMonitor.labels.release=kube-prometheus-stack",
		"podSecurityContext.fsGroup=null", "containerSecurityContext.runAsUser=null", "containerSecurityContext.runAsGroup=null",
		"image.registry=registry.example.com/platform")...)
	sa := find(t, docs, "ServiceAccount")
	if get(sa, "metadata", "name") != "llm-gw" || get(sa, "metadata", "annotations", "eks.amazonaws.com/role-arn") == nil ||
		get(sa, "automountServiceAccountToken") != false {
		t.Errorf("ServiceAccount: %v", sa)
	}
	pod := get(find(t, docs, "Deployment"), "spec", "template").(map[string]any)
	if get(pod, "spec", "serviceAccountName") != "llm-gw" || get(pod, "metadata", "labels", "team") != "platform" {
		t.Errorf("pod template: serviceAccountName %v, labels %v", get(pod, "spec", "serviceAccountName"), get(pod, "metadata", "labels"))
	}
	if get(pod, "spec", "securityContext", "fsGroup") != nil || get(pod, "spec", "securityContext", "runAsNonRoot") != true {
		t.Errorf("pod securityContext: %v", get(pod, "spec", "securityContext"))
	}
	for _, c := range append(get(pod, "spec", "containers").([]any), get(pod, "spec", "initContainers").([]any)...) {
		sc := get(c, "securityContext")
		if get(sc, "runAsUser") != nil || get(sc, "runAsNonRoot") != true || get(sc, "readOnlyRootFilesystem") != true {
			t.Errorf("%v securityContext: %v", get(c, "name"), sc)
		}
		if img := fmt.Sprint(get(c, "image")); get(c, "name") != "envoy" && img != "registry.example.com/platform/aifirewall:0.1.0" {
			t.Errorf("%v image %s", get(c, "name"), img)
		}
	}
	if get(find(t, docs, "ServiceMonitor"), "metadata", "labels", "release") != "kube-prometheus-stack" {
		t.Error("the ServiceMonitor lacks the labels Prometheus selects by")
	}
	test := find(t, docs, "Pod")
	if get(test, "metadata", "annotations", "helm.sh/hook") != "test" ||
		!strings.Contains(fmt.Sprint(get(test, "spec", "containers", 0, "command")), "http://aifirewall:8000/health") {
		t.Errorf("helm test pod: %v", test)
	}
}

// mounts are the names of the volumes c mounts.
func mounts(c any) map[string]bool {
	m := map[string]bool{}
	for _, v := range get(c, "volumeMounts").([]any) {
		m[fmt.Sprint(get(v, "name"))] = true
	}
	return m
}

// Mistakes in values stop the render with a message saying what to set.
func TestChartRefusesBadValues(t *testing.T) {
	for _, c := range []struct {
		set  []string
		want string
	}{
		{[]string{"redis.url=redis://r:6379/0"}, "secret.name: name the Secret"},
		{[]string{"secret.name=s"}, "redis.url: the budgets live in Redis"},
		{append([]string{"mode=daemon"}, base...), `at '/mode': value must be one of 'gateway', 'sidecar', 'extproc'`},
		{append([]string{"failMod=open"}, base...), `additional properties 'failMod' not allowed`},
		{append([]string{"failMode=opn"}, base...), `at '/failMode': value must be one of 'closed', 'open'`},
		{append([]string{"gateway.replicas=-1"}, base...), `at '/gateway/replicas'`},
		{append([]string{"mode=extproc"}, base...), "extproc: whoever reaches the ext_proc port"},
		{append([]string{"mode=extproc", "extproc.tls.secretName=x"}, base...), "extproc.tls.allowedClients"},
		{append([]string{"identityMode=mesh"}, base...), "identityMode: mesh needs the calling workloads' client certificates"},
		{append([]string{"mode=sidecar", "identityMode=mesh"}, base...), "identityMode: mesh needs"},
		{append([]string{"extproc.sendsProviderKeys=true"}, base...), "extproc.sendsProviderKeys: only mode=extproc"},
		{append([]string{"istio.egressGateway.enabled=true"}, base...), "istio: only mode=extproc"},
		{append([]string{"gateway.autoscaling.keda.enabled=true"}, base...), "set gateway.autoscaling.openStreamsPerPod"},
		{append([]string{"gateway.autoscaling.keda.enabled=true", "gateway.autoscaling.openStreamsPerPod=10"}, base...),
			"gateway.autoscaling.keda.prometheusAddress: the Prometheus KEDA queries"},
		{append([]string{"mode=extproc", "extproc.authenticatedByMesh=true", "istio.egressGateway.enabled=true"}, base...),
			"istio: the mesh objects are rendered from the providers file"},
		{append([]string{"workloadEgress.namespaces={Apps}"}, base...), `at '/workloadEgress/namespaces/0'`},
		{append([]string{"identityMode=jwt"}, base...), "identityMode: jwt needs jwt.issuer"},
		{append([]string{"ledger.url=postgres://u:p@db:5432/ledger"}, base...), "belongs in the Secret"},
		{append([]string{"ledger.url=sqlite:///x.db", "ledger.urlSecretKey=k"}, base...), "not both"},
		{append([]string{"ledger.url=mysql://db"}, base...), "at '/ledger/url'"},
		{append([]string{"identityMode=jwt", "mode=extproc", "extproc.authenticatedByMesh=true"}, base...), "identityMode: jwt is verified by the chart's own Envoy"},
		{append([]string{"workloadEgress.namespaces={default}"}, base...), "workloadEgress.namespaces: default is this release's namespace"},
		{append([]string{"mode=sidecar", "workloadEgress.namespaces={apps}"}, base...), "workloadEgress: with the firewall beside each workload"},
	} {
		if out, err := helm(t, "template", "", c.set...); err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%v: %v %s", c.set, err, out)
		}
	}
	// Confining the Istio egress gateway's own namespace would cut it off.
	if out, err := helm(t, "template", "../istio/values.yaml", append([]string{"workloadEgress.namespaces={apps,istio-system}"}, base...)...); err == nil ||
		!strings.Contains(out, "istio-system is the egress gateway's namespace") {
		t.Errorf("workloadEgress of the egress gateway's namespace: %v %s", err, out)
	}
	if out, err := helm(t, "template", "../istio/values-mesh-sidecars.yaml", append([]string{"workloadEgress.namespaces={apps}"}, base...)...); err == nil ||
		!strings.Contains(out, "workloadEgress: with the firewall beside each workload") {
		t.Errorf("workloadEgress with every sidecar: %v %s", err, out)
	}
}

// The budgets the chart writes are a file the sidecar's own parser takes,
// mounted where BUDGETS_FILE says, and nothing on the pods changes with
// them (they apply without a restart).
func TestChartBudgetsFile(t *testing.T) {
	docs := render(t, "testdata/budgets-values.yaml", base...)
	var file string
	for _, d := range docs {
		if d["kind"] == "ConfigMap" && strings.HasSuffix(get(d, "metadata", "name").(string), "-budgets") {
			file = get(d, "data", "budgets.yaml").(string)
		}
	}
	f, err := budgets.Parse("budgets.yaml", []byte(file))
	if err != nil || len(f.Budgets) != 3 || f.Budgets[2].Action != "audit" {
		t.Fatalf("the chart's budgets file: %v %+v\n%s", err, f, file)
	}
	plain := render(t, "", base...)
	annotations := func(docs []doc) any {
		for _, d := range docs {
			if d["kind"] == "Deployment" {
				return get(d, "spec", "template", "metadata", "annotations")
			}
		}
		return nil
	}
	if a, b := annotations(docs), annotations(plain); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("budgets change the pod template's annotations (%v vs %v): editing them would roll the pods", a, b)
	}
	out := fmt.Sprint(docs)
	if !strings.Contains(out, "BUDGETS_FILE") || !strings.Contains(out, "/etc/aifirewall-budgets") {
		t.Fatal("BUDGETS_FILE is not set to the mounted file")
	}
}

// The Envoy configuration the chart's init container writes, with the
// chart's own settings, is one the pinned Envoy accepts, for each mode and
// with a providers file.
func TestChartEnvoyConfigValidates(t *testing.T) {
	for _, m := range matrix {
		t.Run(m.name, func(t *testing.T) {
			docs := render(t, m.file, append(append([]string{}, base...), m.set...)...)
			var pod map[string]any
			for _, d := range docs {
				if d["kind"] == "Deployment" {
					pod = get(d, "spec", "template", "spec").(map[string]any)
				}
			}
			if pod == nil || strings.HasPrefix(m.name, "extproc") {
				return // no Envoy in the release: none, or another's (extproc)
			}
			gen := container(t, pod["initContainers"], "envoy-config")
			dir := t.TempDir()
			// The Secret as the pod mounts it: a key file for each
			// api_key_file under secret.mountPath, a value for each variable.
			mount := filepath.Join(dir, "secret")
			os.MkdirAll(mount, 0o700)
			env := []string{}
			for k, v := range envOf(gen) {
				s := fmt.Sprint(v)
				if _, fromSecret := v.(map[string]any); fromSecret {
					s = "sk-test-" + k
				}
				if k == "JWT_JWKS_FILE" { // the ConfigMap the operator makes
					s = filepath.Join(dir, "jwks.json")
					os.WriteFile(s, []byte(testJWKS(t)), 0o600)
				}
				if k == "PROVIDERS_FILE" {
					cm := find(t, docs, "ConfigMap")
					s = filepath.Join(dir, "providers.yaml")
					provs := get(cm, "data", "providers.yaml").(string)
					for _, m := range regexp.MustCompile(`/var/run/secrets/aifirewall/([A-Za-z0-9._-]+)`).FindAllStringSubmatch(provs, -1) {
						os.WriteFile(filepath.Join(mount, m[1]), []byte("sk-test-file\n"), 0o600)
					}
					os.WriteFile(s, []byte(strings.ReplaceAll(provs, "/var/run/secrets/aifirewall/", mount+"/")), 0o600)
				}
				env = append(env, k+"="+s)
			}
			out := filepath.Join(dir, "envoy.yaml")
			args := get(gen, "args").([]any)
			if fmt.Sprint(args) != "[envoy-config -o /etc/envoy/envoy.yaml]" {
				t.Fatalf("init container args %v", args)
			}
			cmd := exec.Command(testenv.SidecarBinary(t), "envoy-config", "-o", out)
			cmd.Env = env
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("envoy-config: %v\n%s", err, b)
			}
			validate := exec.Command(testenv.EnvoyBinary(t), "--mode", "validate", "-c", out, "--disable-hot-restart")
			validate.Env = append(os.Environ(), env...)
			if b, err := validate.CombinedOutput(); err != nil {
				t.Fatalf("envoy rejects the chart's configuration: %v\n%s", err, b)
			}
		})
	}
}

// deploy/kubernetes/sidecar-pod-snippet.yaml is what the chart's sidecar
// example adds to a pod, so a team copying it gets what the chart tests.
func TestSidecarSnippetMatchesTheChart(t *testing.T) {
	docs := render(t, "", append(append([]string{}, base...), "mode=sidecar", "sidecar.example.enabled=true")...)
	pod := get(find(t, docs, "Deployment"), "spec", "template", "spec").(map[string]any)
	want := map[string]any{}
	for _, k := range []string{"terminationGracePeriodSeconds", "securityContext", "initContainers", "volumes"} {
		want[k] = pod[k]
	}
	path := filepath.Join(testinfra.RepoRoot(t), "deploy", "kubernetes", "sidecar-pod-snippet.yaml")
	if *update {
		b, err := yaml.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		header := "# Add these fields to your Deployment's pod spec (spec.template.spec), then call\n" +
			"# http://127.0.0.1:8000 from your app with its gateway key. Written from the chart\n" +
			"# (release aifirewall, secret.name=aifirewall, redis.url=redis://redis:6379/0) by\n" +
			"#   go test -tags deploy ./deploy/deploytest -run Snippet -update\n" +
			"# Change the Secret name, REDIS_URL and the images to yours.\n"
		if err := os.WriteFile(path, append([]byte(header), b...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	g, _ := yaml.Marshal(got)
	w, _ := yaml.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("%s differs from the chart; regenerate it with -update", path)
	}
}

// testJWKS is a JWKS of a fresh RSA key.
func testJWKS(t *testing.T) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	b, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{"kty": "RSA", "kid": "k", "alg": "RS256",
		"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}}})
	return string(b)
}
