package envoy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
	"github.com/aifirewall/aifirewall/providers"
)

// `aifirewall envoy-config` with the README's providers file: a cluster
// per provider with TLS to its own name, host and prefix routes that tell
// the sidecar their provider, each provider's key put on by Envoy on that
// provider's routes only (after ext_proc), and a configuration Envoy
// accepts. The keys are checked where Envoy runs, and never written.
func TestProvidersFileEnvoyConfig(t *testing.T) {
	root := testinfra.RepoRoot(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "envoy.yaml")
	example, err := os.ReadFile(filepath.Join(root, "deploy/providers.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The Secret mounted as the example says, elsewhere.
	keyFile := filepath.Join(t.TempDir(), "anthropic-api-key")
	os.WriteFile(keyFile, []byte("sk-ant-example\n"), 0o600)
	provs := filepath.Join(t.TempDir(), "providers.yaml")
	os.WriteFile(provs, []byte(strings.Replace(string(example), "/var/run/secrets/aifirewall/anthropic-api-key", keyFile, 1)), 0o600)
	keys := []string{"OPENAI_API_KEY=sk-openai-example", "OPENROUTER_API_KEY=sk-or-example"}
	cmd := exec.Command(testenv.SidecarBinary(t), "envoy-config", "-o", out)
	cmd.Env = append([]string{"ENV_FILE=/nonexistent", "PROVIDERS_FILE=" + provs}, keys...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("envoy-config: %v\n%s", err, b)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, k := range []string{"sk-openai-example", "sk-or-example", "sk-ant-example"} {
			if strings.Contains(string(b), k) {
				t.Errorf("%s holds a provider key", f)
			}
		}
	}
	raw, _ := os.ReadFile(out)
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatal(err)
	}
	sni := map[string]string{}
	for _, c := range b.GetStaticResources().GetClusters() {
		if ts := c.GetTransportSocket(); ts != nil {
			var u tlsv3.UpstreamTlsContext
			if err := ts.GetTypedConfig().UnmarshalTo(&u); err != nil {
				t.Fatal(err)
			}
			san := u.GetCommonTlsContext().GetValidationContext().GetMatchTypedSubjectAltNames()
			if len(san) != 1 || san[0].GetMatcher().GetExact() != u.GetSni() {
				t.Fatalf("%s: SAN check %v does not match SNI %q", c.GetName(), san, u.GetSni())
			}
			sni[c.GetName()] = u.GetSni()
		}
	}
	// Every cluster lets DefaultMaxStreams streams run (the sidecar's twice
	// as many), not Envoy's 1,024, and the overload manager bounds client
	// connections.
	for _, c := range b.GetStaticResources().GetClusters() {
		th := c.GetCircuitBreakers().GetThresholds()
		want := uint32(envoy.DefaultMaxStreams)
		if c.GetName() == "aifirewall_extproc" {
			want *= 2
		}
		if len(th) != 1 || th[0].GetMaxRequests().GetValue() != want || th[0].GetMaxConnections().GetValue() != want ||
			th[0].GetMaxPendingRequests().GetValue() != want/8 {
			t.Errorf("%s circuit breakers: %v", c.GetName(), th)
		}
	}
	if m := b.GetOverloadManager().GetResourceMonitors(); len(m) != 1 || m[0].GetName() != "envoy.resource_monitors.global_downstream_max_connections" {
		t.Errorf("overload manager: %v", b.GetOverloadManager())
	}
	want := map[string]string{"provider_openai": "api.openai.com", "provider_anthropic": "api.anthropic.com", "provider_openrouter": "openrouter.ai"}
	for k, v := range want {
		if sni[k] != v {
			t.Fatalf("TLS names: %v, want %v", sni, want)
		}
	}

	var hcm hcmv3.HttpConnectionManager
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	// ext_proc first, the key injectors (off unless a route enables one)
	// after it, the router last: the sidecar never sees a provider key.
	var order []string
	for _, f := range hcm.GetHttpFilters() {
		if strings.HasPrefix(f.GetName(), "aifirewall.credential.") && !f.GetDisabled() {
			t.Errorf("%s is enabled on every route", f.GetName())
		}
		order = append(order, f.GetName())
	}
	if got := strings.Join(order, " "); got != "envoy.filters.http.ext_proc aifirewall.credential.openai aifirewall.credential.anthropic aifirewall.credential.openrouter envoy.filters.http.router" {
		t.Errorf("filters: %s", got)
	}
	if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() || hcm.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_REJECT_REQUEST {
		t.Fatal("paths must be normalised and encoded slashes refused before routing")
	}
	routed := map[string]string{} // domain or prefix -> provider named to the sidecar
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if r.GetRoute() == nil {
				continue
			}
			var per extprocv3.ExtProcPerRoute
			if err := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_proc"].UnmarshalTo(&per); err != nil {
				t.Fatalf("route %s carries no ext_proc metadata: %v", r.GetName(), err)
			}
			// Exactly its own provider's key injector is enabled here.
			var enabled []string
			for name := range r.GetTypedPerFilterConfig() {
				if strings.HasPrefix(name, "aifirewall.credential.") {
					enabled = append(enabled, name)
				}
			}
			if want := "aifirewall.credential." + strings.TrimPrefix(r.GetRoute().GetCluster(), "provider_"); len(enabled) != 1 || enabled[0] != want {
				t.Errorf("route %s enables key injectors %v, want [%s]", r.GetName(), enabled, want)
			}
			md := map[string]string{}
			for _, h := range per.GetOverrides().GetGrpcInitialMetadata() {
				md[h.GetKey()] = h.GetValue()
			}
			if "provider_"+md[providers.MetadataProvider] != r.GetRoute().GetCluster() {
				t.Fatalf("route %s names provider %q but goes to %s", r.GetName(), md[providers.MetadataProvider], r.GetRoute().GetCluster())
			}
			key := r.GetMatch().GetPrefix()
			if !slices.Contains(vh.GetDomains(), "*") {
				key = vh.GetDomains()[0]
			}
			routed[key] = md[providers.MetadataProvider] + md[providers.MetadataPathPrefix]
		}
	}
	for k, v := range map[string]string{"api.openai.com": "openai", "api.anthropic.com": "anthropic", "openrouter.ai": "openrouter",
		"/openai/": "openai/openai", "/anthropic/": "anthropic/anthropic", "/": "openrouter"} {
		if routed[k] != v {
			t.Errorf("%s routes to %q, want %q (all: %v)", k, routed[k], v, routed)
		}
	}
	// Longest prefix first: "/" must come last in the catch-all host.
	last := hcm.GetRouteConfig().GetVirtualHosts()[len(hcm.GetRouteConfig().GetVirtualHosts())-1].GetRoutes()
	if p := last[len(last)-1].GetMatch().GetPrefix(); p != "/" {
		t.Fatalf("last route matches %q", p)
	}
	validate := exec.Command(testenv.EnvoyBinary(t), "--mode", "validate", "-c", out, "--disable-hot-restart")
	validate.Env = append(os.Environ(), keys...)
	if b, err := validate.CombinedOutput(); err != nil {
		t.Fatalf("envoy rejects the providers configuration: %v\n%s", err, b)
	}
}
