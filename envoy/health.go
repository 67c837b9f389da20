package envoy

import (
	"fmt"
	"net"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

const adminCluster = "envoy_admin"

// healthListener serves GET /ready from Envoy's admin interface and nothing
// else, so that a kubelet can probe Envoy's readiness without the admin
// interface (which can stop Envoy) being reachable from the network.
func healthListener(o Options) (*listenerv3.Listener, *clusterv3.Cluster, error) {
	addr, err := socketAddress(o.HealthAddr, "")
	if err != nil {
		return nil, nil, fmt.Errorf("health address: %w", err)
	}
	admin, err := socketAddress(o.AdminAddr, "")
	if err != nil {
		return nil, nil, fmt.Errorf("admin address: %w", err)
	}
	if ip := net.ParseIP(admin.GetSocketAddress().GetAddress()); ip != nil && ip.IsUnspecified() {
		admin.GetSocketAddress().Address = "127.0.0.1"
	}
	ready := &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/ready"},
			Headers: []*routev3.HeaderMatcher{{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("GET")}}}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: adminCluster}, Timeout: durationpb.New(2 * time.Second)}},
	}
	other := &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 404}},
	}
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "envoy_health",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{Name: "health",
			VirtualHosts: []*routev3.VirtualHost{{Name: "health", Domains: []string{"*"}, Routes: []*routev3.Route{ready, other}}}}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		return nil, nil, err
	}
	lis := &listenerv3.Listener{Name: "envoy_health", Address: addr, FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
		Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}}}
	c := staticOrDNS(adminCluster, admin)
	c.ConnectTimeout = durationpb.New(time.Second)
	return lis, c, nil
}
