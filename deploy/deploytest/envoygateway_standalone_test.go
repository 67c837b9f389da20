//go:build deploy

package deploytest

// Envoy Gateway's standalone mode, as TestEnvoyGatewayController runs it:
// its configuration, the resources a host takes, and its status output.

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// standaloneConfig writes the EnvoyGateway configuration: the shipped
// values' config.envoyGateway with the standalone provider (resources from
// dir/resources, host infrastructure under dir).
func standaloneConfig(t *testing.T, dir string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testinfra.RepoRoot(t), "deploy/envoy-gateway/envoy-gateway-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.UnmarshalStrict(raw, &values); err != nil {
		t.Fatal(err)
	}
	cfg := get(values, "config", "envoyGateway").(map[string]any)
	cfg["apiVersion"], cfg["kind"] = "gateway.envoyproxy.io/v1alpha1", "EnvoyGateway"
	cfg["gateway"] = map[string]any{"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"}
	cfg["logging"] = map[string]any{"level": map[string]any{"default": "info"}}
	cfg["provider"] = map[string]any{"type": "Custom", "custom": map[string]any{
		"resource": map[string]any{"type": "File", "file": map[string]any{"paths": []string{filepath.Join(dir, "resources")}}},
		"infrastructure": map[string]any{"type": "Host", "host": map[string]any{
			"configHome": filepath.Join(dir, "config"), "dataHome": filepath.Join(dir, "data"),
			"stateHome": filepath.Join(dir, "state"), "runtimeDir": filepath.Join(dir, "run")}},
	}}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "envoy-gateway.yaml")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// standaloneResources is llm-egress.yaml with what a host has no use for
// replaced: the EnvoyProxy's Kubernetes provider (Deployment, Service) by
// the host provider with the version of the Envoy at hand, and the
// firewall's Service (a file provider reads no Services nor
// EndpointSlices) by a Backend of the firewall's address, with the
// BackendTLSPolicy that targets it; plus what the file's comments ask the
// operator to create.
func standaloneResources(t *testing.T, pki *testinfra.PKI, gw testinfra.ClientCert, firewallIP string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testinfra.RepoRoot(t), "deploy/envoy-gateway/llm-egress.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	res := string(raw)
	for old, repl := range map[string]string{
		"  provider:\n    type: Kubernetes\n    kubernetes:\n      envoyService:\n        type: ClusterIP\n        name: llm-egress   # workloads' base URLs name it\n": "  provider: {type: Host, host: {envoyVersion: \"" + envoyVersion(t, testenv.EnvoyBinary(t)) + "\"}}\n",
		"        - {name: aifirewall, port: 50051}\n":                               "        - {group: gateway.envoyproxy.io, kind: Backend, name: aifirewall, port: 50051}\n",
		"    - {group: \"\", kind: Service, name: aifirewall, sectionName: grpc}\n": "    - {group: gateway.envoyproxy.io, kind: Backend, name: aifirewall}\n",
	} {
		if !strings.Contains(res, old) {
			t.Fatalf("llm-egress.yaml no longer has %q: update this test", old)
		}
		res = strings.Replace(res, old, repl, 1)
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	read := func(f string) string { b, _ := os.ReadFile(f); return string(b) }
	caPEM, _ := json.Marshal(read(pki.CAFile))
	return res + "---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: aifirewall, namespace: aifirewall}\n" +
		"spec:\n  endpoints: [{ip: {address: " + firewallIP + ", port: 50051}}]\n" +
		"---\napiVersion: v1\nkind: Secret\nmetadata: {name: openai-key, namespace: aifirewall}\ndata: {credential: " + b64("Bearer sk-eg-openai") + "}\n" +
		"---\napiVersion: v1\nkind: Secret\nmetadata: {name: anthropic-key, namespace: aifirewall}\ndata: {credential: " + b64("sk-eg-anthropic") + "}\n" +
		"---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {name: llm-egress-client-tls, namespace: aifirewall}\n" +
		"data: {tls.crt: " + b64(read(gw.CertFile)) + ", tls.key: " + b64(read(gw.KeyFile)) + "}\n" +
		"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: aifirewall-extproc-ca, namespace: aifirewall}\ndata: {ca.crt: " + string(caPEM) + "}\n"
}

// envoyVersion is the x.y.z of an Envoy binary's --version.
func envoyVersion(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	v := regexp.MustCompile(`/(\d+\.\d+\.\d+)/`).FindSubmatch(out)
	if v == nil {
		t.Fatalf("no version in %q", out)
	}
	return string(v[1])
}

type condition struct {
	Scope                         string // "" for the resource, "listener <name>: " or "parent <name>: "
	Type, Status, Reason, Message string
}

// statuses reads Envoy Gateway's file provider's status output ("Got new
// status for <Kind>", the status as YAML, then the log fields with the
// resource's key), the last one reported for each resource.
func statuses(log string) map[string][]condition {
	out := map[string][]condition{}
	lines := strings.Split(log, "\n")
	for i := 0; i < len(lines); i++ {
		_, kind, ok := strings.Cut(lines[i], "Got new status for ")
		if !ok {
			continue
		}
		var body []string
		j := i + 1
		for ; j < len(lines) && !strings.HasPrefix(lines[j], "\t{"); j++ {
			body = append(body, lines[j])
		}
		if j == len(lines) {
			break // not all written yet
		}
		var fields struct{ Key string }
		json.Unmarshal([]byte(strings.TrimSpace(lines[j])), &fields)
		var st struct {
			Conditions []condition
			Listeners  []struct {
				Name       string
				Conditions []condition
			}
			Parents []struct {
				ParentRef  struct{ Name string } `json:"parentRef"`
				Conditions []condition
			}
			Ancestors []struct {
				AncestorRef struct{ Name string } `json:"ancestorRef"`
				Conditions  []condition
			}
		}
		if yaml.Unmarshal([]byte(strings.Join(body, "\n")), &st) != nil {
			continue
		}
		var cs []condition
		add := func(scope string, list []condition) {
			for _, c := range list {
				c.Scope = scope
				cs = append(cs, c)
			}
		}
		add("", st.Conditions)
		for _, l := range st.Listeners {
			add("listener "+l.Name+": ", l.Conditions)
		}
		for _, p := range st.Parents {
			add("parent "+p.ParentRef.Name+": ", p.Conditions)
		}
		for _, a := range st.Ancestors {
			add("ancestor "+a.AncestorRef.Name+": ", a.Conditions)
		}
		if kind == "Unknown" {
			continue // EnvoyProxy's, which it cannot name
		}
		out[kind+" "+fields.Key] = cs
		i = j
	}
	return out
}
