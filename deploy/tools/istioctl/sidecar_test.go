package tools

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	extproc "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/networking/core"
)

// The mesh-wide variant (deploy/istio/mesh-sidecars.yaml), rendered by
// Istio's generator for an ordinary workload's sidecar: its outbound HTTP
// listener on port 80 carries the ext_proc filter, disabled, just before
// the router; the providers' virtual hosts enable it and name their
// provider; any other host does not. With AIFIREWALL_ISTIO_RENDER set, the
// rendered connection manager (routes inlined, Istio's own filters, which
// only istio-proxy has, left out) is written there for the deploy tests to
// run in the real Envoy with the real sidecar.
func TestSidecarConfigFromIstiosGenerator(t *testing.T) {
	var in []string
	for _, f := range []string{"../../istio/mesh-sidecars.yaml"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		in = append(in, string(raw))
	}
	cfg := strings.Join(in, "\n---\n") + firewallEntry + `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: example, namespace: default}
spec:
  hosts: [example.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
`
	cg := core.NewConfigGenTest(t, core.TestOptions{ConfigString: cfg})
	proxy := cg.SetupProxy(&model.Proxy{ConfigNamespace: "default"})
	listeners := cg.Listeners(proxy)
	var out *hcm.HttpConnectionManager
	for _, l := range listeners {
		if l.GetName() != "0.0.0.0_80" {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var m hcm.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&m) == nil {
					out = &m
				}
			}
		}
	}
	if out == nil {
		t.Fatal("no outbound HTTP listener on port 80")
	}
	var names []string
	var kept []*hcm.HttpFilter
	for _, f := range out.GetHttpFilters() {
		names = append(names, f.GetName())
		if !strings.HasPrefix(f.GetName(), "istio.") {
			kept = append(kept, f)
		}
	}
	i := slices.Index(names, "envoy.filters.http.ext_proc")
	if i < 0 || i != len(names)-2 || !out.GetHttpFilters()[i].GetDisabled() {
		t.Fatalf("filters %v: ext_proc must be just before the router, disabled by default", names)
	}
	routes := cg.RoutesFromListeners(proxy, listeners)
	found := false
	for _, rc := range routes {
		if rc.GetName() != out.GetRds().GetRouteConfigName() {
			continue
		}
		found = true
		enabled := map[string]string{}
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				var per extproc.ExtProcPerRoute
				if c, ok := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_proc"]; ok && c.UnmarshalTo(&per) == nil {
					enabled[vh.GetName()] = per.GetOverrides().GetGrpcInitialMetadata()[0].GetValue()
				}
			}
		}
		if enabled["api.openai.com:80"] != "openai" || enabled["api.anthropic.com:80"] != "anthropic" || enabled["example.test:80"] != "" {
			t.Fatalf("ext_proc enabled on %v; want the two providers only", enabled)
		}
		out.RouteSpecifier = &hcm.HttpConnectionManager_RouteConfig{RouteConfig: rc}
	}
	if !found {
		t.Fatalf("no route configuration %q", out.GetRds().GetRouteConfigName())
	}
	out.HttpFilters = kept
	if dir := os.Getenv("AIFIREWALL_ISTIO_RENDER"); dir != "" {
		js, err := protojson.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "sidecar-outbound-80.json"), js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
