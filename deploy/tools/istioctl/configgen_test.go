package tools

import (
	"os"
	"slices"
	"testing"

	extproc "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/networking/core"
)

// Istio's own generator (the code istiod pushes configuration with) turns
// deploy/istio/llm-egress.yaml into the egress gateway's Envoy
// configuration: its listener runs the firewall's ext_proc filter just
// before the router, calling the firewall's Service, and each provider's
// virtual host names that provider to the firewall.
// firewallEntry is the firewall's Service (the chart's extproc mode) as the
// mesh knows it.
const firewallEntry = `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: aifirewall, namespace: aifirewall}
spec:
  hosts: [aifirewall.aifirewall.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 50051, name: grpc, protocol: GRPC}]
  endpoints: [{address: 10.0.0.50}]
`

func TestEgressGatewayConfigFromIstiosGenerator(t *testing.T) {
	raw, err := os.ReadFile("../../istio/llm-egress.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cg := core.NewConfigGenTest(t, core.TestOptions{ConfigString: string(raw) + firewallEntry})
	labels := map[string]string{"istio": "llm-egressgateway"}
	proxy := cg.SetupProxy(&model.Proxy{Type: model.Router, Labels: labels, ConfigNamespace: "istio-system",
		Metadata: &model.NodeMetadata{Labels: labels, Namespace: "istio-system"}})

	var found bool
	for _, l := range cg.Listeners(proxy) {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var m hcm.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&m) != nil {
					continue
				}
				var names []string
				for _, hf := range m.GetHttpFilters() {
					names = append(names, hf.GetName())
				}
				i := slices.Index(names, "envoy.filters.http.ext_proc")
				if i < 0 || i != len(names)-2 || names[len(names)-1] != "envoy.filters.http.router" {
					t.Fatalf("listener %s filters %v: ext_proc must come just before the router", l.GetName(), names)
				}
				var ep extproc.ExternalProcessor
				if err := m.GetHttpFilters()[i].GetTypedConfig().UnmarshalTo(&ep); err != nil {
					t.Fatal(err)
				}
				if c := ep.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != "outbound|50051||aifirewall.aifirewall.svc.cluster.local" {
					t.Fatalf("ext_proc calls %q", c)
				}
				found = true
			}
		}
	}
	if !found {
		t.Fatal("no HTTP listener on the egress gateway")
	}

	named := map[string]string{}
	for _, rc := range cg.Routes(proxy) {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				var per extproc.ExtProcPerRoute
				if cfg, ok := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_proc"]; ok && cfg.UnmarshalTo(&per) == nil {
					for _, md := range per.GetOverrides().GetGrpcInitialMetadata() {
						named[vh.GetName()] = md.GetKey() + "=" + md.GetValue()
					}
				}
			}
		}
	}
	want := map[string]string{"api.openai.com:80": "x-aifirewall-provider=openai", "api.anthropic.com:80": "x-aifirewall-provider=anthropic"}
	for vh, md := range want {
		if named[vh] != md {
			t.Errorf("virtual host %s names %q to the firewall, want %q (all: %v)", vh, named[vh], md, named)
		}
	}
}
