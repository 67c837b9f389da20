//go:build deploy

package deploytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/testinfra"
	"github.com/aifirewall/aifirewall/providers"
)

// manifests reads a multi-document YAML file of the repository.
func manifests(t *testing.T, rel string) []doc {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testinfra.RepoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return splitDocs(t, rel, string(raw))
}

// The EnvoyFilters (egress gateway, and every sidecar) run the ext_proc
// filter exactly as the generated Envoy configuration does (one generator:
// they are checked against it), bar the cluster that names the firewall's
// Service in the mesh.
func TestIstioExtProcMatchesTheGenerator(t *testing.T) {
	for _, file := range []string{"deploy/istio/llm-egress.yaml", "deploy/istio/mesh-sidecars.yaml"} {
		ef := find(t, manifests(t, file), "EnvoyFilter")
		typed := get(ef, "spec", "configPatches", 0, "patch", "value", "typed_config").(map[string]any)
		if typed["@type"] != "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor" {
			t.Fatalf("%s: @type %v", file, typed["@type"])
		}
		delete(typed, "@type")
		js, _ := json.Marshal(typed)
		var got extprocv3.ExternalProcessor
		if err := protojson.Unmarshal(js, &got); err != nil {
			t.Fatalf("%s: EnvoyFilter typed_config: %v", file, err)
		}
		want := envoy.ExtProcFilter(envoy.Options{})
		want.GrpcService = &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "outbound|50051||aifirewall.aifirewall.svc.cluster.local"}}}
		if !proto.Equal(&got, want) {
			w, _ := protojson.Marshal(want)
			t.Fatalf("%s: the EnvoyFilter's ext_proc differs from the generator's:\n got %s\nwant %s", file, js, w)
		}
	}
}

// Envoy Gateway itself translates the egress resources (with the Service
// the chart's extproc mode makes) and accepts every one: each status
// condition it sets is True (Accepted, ResolvedRefs, Programmed), and the
// xDS it writes carries the firewall's ext_proc filter with the modes the
// firewall needs, an 8 MiB body buffer and no route deadline.
func TestEnvoyGatewayAcceptsTheEgress(t *testing.T) {
	egctl := tool(t, "egctl")
	in := filepath.Join(t.TempDir(), "in.yaml")
	raw, err := os.ReadFile(filepath.Join(testinfra.RepoRoot(t), "deploy/envoy-gateway/llm-egress.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// What the file's comments ask for, and the chart's extproc Service.
	pki := testinfra.NewPKIFor(t, "", "aifirewall.aifirewall.svc")
	os.WriteFile(in, []byte(egressInput(string(raw), pki, pki.IssueClient(t, "llm-egress.aifirewall.gateway"))), 0o600)
	out, err := exec.Command(egctl, "x", "translate", "--from", "gateway-api", "--to", "gateway-api", "-f", in, "-n", "aifirewall", "-o", "yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("egctl x translate: %v\n%s", err, out)
	}
	var conds []map[string]any
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if _, ok := x["reason"]; ok && x["type"] != nil && x["status"] != nil {
				conds = append(conds, x)
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	var status any
	if err := yaml.Unmarshal(out, &status); err != nil {
		t.Fatal(err)
	}
	walk(status)
	seen := map[string]bool{}
	for _, c := range conds {
		seen[c["type"].(string)] = true
		if c["status"] != "True" {
			t.Errorf("condition %v is %v: %v", c["type"], c["status"], c["message"])
		}
	}
	for _, want := range []string{"Accepted", "ResolvedRefs", "Programmed"} {
		if !seen[want] {
			t.Errorf("no %s condition in egctl's status output", want)
		}
	}

	xds, err := exec.Command(egctl, "x", "translate", "--from", "gateway-api", "--to", "xds", "-t", "all", "-f", in, "-n", "aifirewall", "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("egctl x translate --to xds: %v\n%s", err, xds)
	}
	for _, want := range []string{`"requestBodyMode":"BUFFERED"`, `"responseBodyMode":"STREAMED"`, `"requestHeaderMode":"SEND"`,
		`"responseHeaderMode":"SEND"`, `"allowModeOverride":true`, `"messageTimeout":"10s"`,
		// Bodies up to the firewall's limit are buffered, not refused at
		// 32 KiB, and streams have no overall deadline.
		`"perConnectionBufferLimitBytes":8388608`, `"timeout":"0s"`,
		// The route's name tells the firewall the provider.
		`"requestAttributes":["xds.route_name"]`,
		// The provider is asked for by its own name, not the gateway's.
		`"hostRewriteLiteral":"api.openai.com"`, `"hostRewriteLiteral":"api.anthropic.com"`,
		// The gateway puts the keys on, after ext_proc, and reaches the
		// firewall over TLS to its Service's name, with a client certificate.
		`credential_injector.v3.CredentialInjector`, `"sni":"aifirewall.aifirewall.svc"`,
		`"tlsCertificateSdsSecretConfigs":[{"name":"aifirewall/llm-egress-client-tls"`} {
		if !strings.Contains(compact(xds), want) {
			t.Errorf("the translated configuration lacks %s", want)
		}
	}
}

func compact(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

// istioctl validates every Istio resource of the egress file and finds
// nothing wrong in it when analysing it with the egress gateway it names
// (offline: no cluster, the gateway's Deployment and Service given here).
func TestIstioctlAcceptsTheEgress(t *testing.T) {
	istioctl := tool(t, "istioctl")
	file := filepath.Join(testinfra.RepoRoot(t), "deploy/istio/llm-egress.yaml")
	sidecars := filepath.Join(testinfra.RepoRoot(t), "deploy/istio/mesh-sidecars.yaml")
	registryOnly := filepath.Join(testinfra.RepoRoot(t), "deploy/istio/registry-only.yaml")
	out, err := exec.Command(istioctl, "validate", "-f", file, "-f", sidecars, "-f", registryOnly).CombinedOutput()
	if err != nil {
		t.Fatalf("istioctl validate: %v\n%s", err, out)
	}
	// The one warning it gives is the one every EnvoyFilter gets.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "* ") && !strings.Contains(line, "EnvoyFilter exposes internal implementation details") {
			t.Errorf("istioctl validate: %s", line)
		}
	}
	gw := filepath.Join(t.TempDir(), "egressgateway.yaml")
	os.WriteFile(gw, []byte(`apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Service
metadata: {name: istio-llm-egressgateway, namespace: istio-system}
spec:
  selector: {istio: llm-egressgateway}
  ports:
    - {name: https-llm, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Pod
metadata:
  name: istio-llm-egressgateway-0
  namespace: istio-system
  labels: {istio: llm-egressgateway}
spec:
  containers:
    - {name: istio-proxy, image: istio/proxyv2, ports: [{containerPort: 8080}]}
`), 0o600)
	for _, c := range []struct {
		name, from, to, want string
	}{
		{"as written", "", "", ""},
		// It can find something: a route to a subset nobody defines.
		{"broken", "subset: openai\n", "subset: openaix\n", "IST0101"},
	} {
		in := file
		if c.from != "" {
			raw, _ := os.ReadFile(file)
			in = filepath.Join(t.TempDir(), "broken.yaml")
			os.WriteFile(in, []byte(strings.Replace(string(raw), c.from, c.to, 1)), 0o600)
		}
		out, _ = exec.Command(istioctl, "analyze", "-A", "--use-kube=false", "--failure-threshold", "Info", in, registryOnly, gw).CombinedOutput()
		if c.from == "" {
			// The mesh-wide variant, analysed on its own (it replaces the other).
			more, _ := exec.Command(istioctl, "analyze", "-A", "--use-kube=false", "--failure-threshold", "Info", sidecars).CombinedOutput()
			out = append(out, more...)
		}
		var found []string
		for _, line := range strings.Split(string(out), "\n") {
			// IST0133 is the warning every EnvoyFilter gets.
			if m := analysisCode.FindStringSubmatch(line); m != nil && m[1] != "[IST0133]" {
				found = append(found, line)
			}
		}
		if c.want == "" && len(found) > 0 || c.want != "" && (len(found) != 1 || !strings.Contains(found[0], c.want)) {
			t.Errorf("istioctl analyze, %s: %q\n%s", c.name, found, out)
		}
	}
}

var analysisCode = regexp.MustCompile(`^(?:Error|Warning|Info) (\[IST\d+\])`)

// Each provider of the firewall's values for Istio has one route patch on
// the egress gateway, on its host's virtual host, naming it to the firewall
// as the generated configuration's routes do; no patch names a provider
// the firewall does not know.
func TestIstioRoutesNameTheProviders(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testinfra.RepoRoot(t), "deploy/istio/values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Providers struct {
			Providers []struct {
				Name  string   `json:"name"`
				Hosts []string `json:"hosts"`
			} `json:"providers"`
		} `json:"providers"`
	}
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{} // vhost -> provider
	for _, p := range values.Providers.Providers {
		for _, h := range p.Hosts {
			want[h+":80"] = p.Name
		}
	}
	got := map[string]string{}
	ef := find(t, manifests(t, "deploy/istio/llm-egress.yaml"), "EnvoyFilter")
	for _, cp := range get(ef, "spec", "configPatches").([]any) {
		if get(cp, "applyTo") != "HTTP_ROUTE" {
			continue
		}
		per := get(cp, "patch", "value", "typed_per_filter_config", "envoy.filters.http.ext_proc").(map[string]any)
		if per["@type"] != "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute" {
			t.Fatalf("@type %v", per["@type"])
		}
		delete(per, "@type")
		js, _ := json.Marshal(per)
		var msg extprocv3.ExtProcPerRoute
		if err := protojson.Unmarshal(js, &msg); err != nil {
			t.Fatalf("route patch: %v", err)
		}
		md := msg.GetOverrides().GetGrpcInitialMetadata()
		if len(md) != 1 || md[0].GetKey() != providers.MetadataProvider {
			t.Fatalf("route patch metadata %v", md)
		}
		got[get(cp, "match", "routeConfiguration", "vhost", "name").(string)] = md[0].GetValue()
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("route patches %v, want %v (from deploy/istio/values.yaml)", got, want)
	}
}

// Envoy Gateway's own chart (the pinned gateway-helm), with the values the
// README gives, configures the controller to serve the Backend API the
// egress routes use; without them it does not (its default refuses them).
func TestEnvoyGatewayValuesEnableBackend(t *testing.T) {
	src := moduleDir(t, "egctl", "github.com/envoyproxy/gateway") + "/charts/gateway-helm"
	chart := filepath.Join(t.TempDir(), "gateway-helm")
	if out, err := exec.Command("cp", "-r", src, chart).CombinedOutput(); err != nil {
		t.Fatalf("copy the chart: %v %s", err, out)
	}
	exec.Command("chmod", "-R", "u+w", chart).Run()
	// The release process fills in the controller's image.
	raw, err := os.ReadFile(filepath.Join(chart, "values.tmpl.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	vals := strings.NewReplacer("${GatewayImage}", "docker.io/envoyproxy/gateway:v1.9.1", "${GatewayImagePullPolicy}", "IfNotPresent").Replace(string(raw))
	os.WriteFile(filepath.Join(chart, "values.yaml"), []byte(vals), 0o600)
	ours := filepath.Join(testinfra.RepoRoot(t), "deploy/envoy-gateway/envoy-gateway-values.yaml")
	for _, c := range []struct {
		args []string
		want bool
	}{{[]string{"-f", ours}, true}, {nil, false}} {
		args := append([]string{"template", "eg", chart, "-n", "envoy-gateway-system", "--kube-version", kubeVersion}, c.args...)
		out, err := exec.Command(tool(t, "helm"), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("helm template gateway-helm: %v\n%s", err, out)
		}
		var cfg map[string]any
		for _, d := range splitDocs(t, "gateway-helm", string(out)) {
			if d["kind"] == "ConfigMap" && get(d, "metadata", "name") == "envoy-gateway-config" {
				if err := yaml.Unmarshal([]byte(get(d, "data", "envoy-gateway.yaml").(string)), &cfg); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got := get(cfg, "extensionApis", "enableBackend") == true; got != c.want {
			t.Errorf("values %v: enableBackend %v, want %v (config %v)", c.args, got, c.want, cfg)
		}
	}
}

// The Istio files are what the chart renders for release aifirewall in
// namespace aifirewall with the Istio values (deploy/istio/values.yaml for
// the egress gateway, values-mesh-sidecars.yaml for every sidecar): the
// files the other tests check are the chart's output, and the Service they
// name is the release's.
func TestIstioFilesAreTheChartsOutput(t *testing.T) {
	root := testinfra.RepoRoot(t)
	for _, c := range []struct{ values, template, file, header string }{
		{"deploy/istio/values.yaml", "templates/istio-egress.yaml", "deploy/istio/llm-egress.yaml", istioEgressHeader},
		{"deploy/istio/values-mesh-sidecars.yaml", "templates/istio-sidecars.yaml", "deploy/istio/mesh-sidecars.yaml", istioSidecarsHeader},
	} {
		render := func(release, ns string) string {
			out, err := exec.Command(tool(t, "helm"), "template", release, chartDir(t), "--kube-version", kubeVersion, "-n", ns,
				"-f", filepath.Join(root, c.values), "--set", "secret.name=aifirewall", "--set", "redis.url=redis://redis:6379/0",
				"--show-only", c.template).CombinedOutput()
			if err != nil {
				t.Fatalf("helm template %s: %v\n%s", c.template, err, out)
			}
			return string(out)
		}
		var kept []string
		for _, line := range strings.Split(strings.TrimPrefix(render("aifirewall", "aifirewall"), "---\n"), "\n") {
			if !strings.HasPrefix(line, "# Source: ") {
				kept = append(kept, line)
			}
		}
		want := c.header + strings.TrimRight(strings.Join(kept, "\n"), "\n") + "\n"
		path := filepath.Join(root, c.file)
		if *update {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s differs from the chart's output; regenerate it with -update", path)
		}
		// A release of another name in another namespace names its own Service.
		if out := render("llm-fw", "platform"); !strings.Contains(out, "cluster_name: outbound|50051||llm-fw-aifirewall.platform.svc.cluster.local") {
			t.Errorf("%s, release llm-fw in namespace platform:\n%s", c.template, out)
		}
	}
}

const istioEgressHeader = `# The Istio egress gateway's objects for the firewall released as aifirewall
# in namespace aifirewall with deploy/istio/values.yaml. The chart renders
# them itself, for any release name and namespace (istio.egressGateway,
# enabled in those values); this file is that output, for review or
# kubectl apply, kept equal to it by
#   go test -tags deploy ./deploy/deploytest -run IstioFilesAreTheChartsOutput -update
# Install:
#   helm install aifirewall deploy/helm/aifirewall --namespace aifirewall \
#     -f deploy/istio/values.yaml --set secret.name=aifirewall --set redis.url=...
#   kubectl apply -f deploy/istio/registry-only.yaml
# The egress gateway is a dedicated one (istio-llm-egressgateway, e.g.
# installed with istioctl and an IstioOperator naming it), so that its every
# request is LLM traffic. A provider more: its entry, with its hosts, in the
# providers file of the values.
---
`

const istioSidecarsHeader = `# Every sidecar's objects for the firewall released as aifirewall in
# namespace aifirewall with deploy/istio/values-mesh-sidecars.yaml, instead
# of the egress gateway (llm-egress.yaml; one or the other). The chart
# renders them itself, for any release name and namespace
# (istio.meshSidecars, enabled in those values); this file is that output,
# for review or kubectl apply, kept equal to it by
#   go test -tags deploy ./deploy/deploytest -run IstioFilesAreTheChartsOutput -update
# Install:
#   helm install aifirewall deploy/helm/aifirewall --namespace aifirewall \
#     -f deploy/istio/values-mesh-sidecars.yaml --set secret.name=aifirewall --set redis.url=...
---
`
