package envoy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
	"github.com/aifirewall/aifirewall/providers"
)

// `aifirewall envoy-config` with the README's providers file: a cluster
// per provider with TLS to its own name, host and prefix routes that tell
// the sidecar their provider, and a configuration Envoy accepts. It needs
// no provider key: an init container that writes it holds none.
func TestProvidersFileEnvoyConfig(t *testing.T) {
	root := testinfra.RepoRoot(t)
	out := filepath.Join(t.TempDir(), "envoy.yaml")
	cmd := exec.Command(testenv.SidecarBinary(t), "envoy-config", "-o", out)
	cmd.Env = []string{"ENV_FILE=/nonexistent", "PROVIDERS_FILE=" + filepath.Join(root, "deploy/providers.example.yaml")}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("envoy-config: %v\n%s", err, b)
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
	if b, err := exec.Command(testenv.EnvoyBinary(t), "--mode", "validate", "-c", out, "--disable-hot-restart").CombinedOutput(); err != nil {
		t.Fatalf("envoy rejects the providers configuration: %v\n%s", err, b)
	}
}
