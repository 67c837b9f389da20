package tools

import (
	"os"
	"strings"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/networking/core"
)

// With llm-egress.yaml and registry-only.yaml, Istio's generator gives an
// ordinary workload's sidecar no way to a provider but the egress gateway:
// no cluster for a provider's TLS port, and traffic to destinations the
// mesh does not know is dropped (BlackHoleCluster) instead of passed
// through. The gateway keeps its way out. Without registry-only.yaml the
// same sidecar passes unknown traffic through: the setting is what closes
// the bypass.
func TestWorkloadsCannotBypassTheEgressGateway(t *testing.T) {
	var files []string
	for _, f := range []string{"../../istio/llm-egress.yaml", "../../istio/registry-only.yaml"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, string(raw))
	}
	for _, c := range []struct {
		name         string
		cfg          string
		unknownGoing string // where a workload's traffic to an unknown destination goes
	}{
		{"with registry-only.yaml", strings.Join(files, "\n---\n"), "BlackHoleCluster"},
		{"without it", files[0], "PassthroughCluster"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cg := core.NewConfigGenTest(t, core.TestOptions{ConfigString: c.cfg + firewallEntry})
			app := cg.SetupProxy(&model.Proxy{ConfigNamespace: "default"})
			for _, cl := range cg.Clusters(app) {
				if strings.HasPrefix(cl.GetName(), "outbound|443||api.") {
					t.Errorf("a workload's sidecar has cluster %s: a way to the provider past the gateway", cl.GetName())
				}
			}
			if got := unknownDestination(t, cg.Listeners(app)); got != c.unknownGoing {
				t.Errorf("a workload's traffic to an unknown destination goes to %q, want %q", got, c.unknownGoing)
			}
			labels := map[string]string{"istio": "llm-egressgateway"}
			gw := cg.SetupProxy(&model.Proxy{Type: model.Router, Labels: labels, ConfigNamespace: "istio-system",
				Metadata: &model.NodeMetadata{Labels: labels, Namespace: "istio-system"}})
			var out []string
			for _, cl := range cg.Clusters(gw) {
				if strings.HasPrefix(cl.GetName(), "outbound|443||api.") {
					out = append(out, cl.GetName())
				}
			}
			if len(out) != 2 {
				t.Errorf("the egress gateway's clusters to the providers: %v", out)
			}
		})
	}
}

// unknownDestination is the cluster the sidecar's virtual outbound listener
// sends traffic to when no other listener takes it (its catch-all chain).
func unknownDestination(t *testing.T, ls []*listener.Listener) string {
	t.Helper()
	for _, l := range ls {
		if l.GetName() != "virtualOutbound" {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			if fc.GetName() != "virtualOutbound-catchall-tcp" {
				continue
			}
			for _, f := range fc.GetFilters() {
				var p tcp.TcpProxy
				if f.GetTypedConfig().UnmarshalTo(&p) == nil {
					return p.GetCluster()
				}
			}
		}
	}
	t.Fatal("no virtualOutbound listener with a catch-all TCP chain")
	return ""
}
