package envoy

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/aifirewall/aifirewall/processor/provider"
	"github.com/aifirewall/aifirewall/providers"
)

const extProcFilter = "envoy.filters.http.ext_proc"

// providerList is what the configuration routes to: the providers file's
// upstreams, or UPSTREAM_BASE_URL as one provider taking every path.
func providerList(o Options) ([]providers.Provider, error) {
	if len(o.Providers) > 0 {
		for _, p := range o.Providers {
			if p.URL == nil {
				return nil, fmt.Errorf("provider %s: not checked (load it with providers.Load)", p.Name)
			}
		}
		return o.Providers, nil
	}
	up, err := url.Parse(o.UpstreamURL)
	if err != nil || up.Host == "" || (up.Scheme != "http" && up.Scheme != "https") {
		return nil, fmt.Errorf("UPSTREAM_BASE_URL %q must be an http:// or https:// URL", providers.Redact(o.UpstreamURL))
	}
	return []providers.Provider{{Name: providers.ShorthandName, URL: up, PathPrefix: "/",
		Kind: o.UpstreamKind, APIKeyEnv: o.UpstreamKeyEnv}}, nil
}

func clusterName(p providers.Provider) string { return "provider_" + p.Name }

// routeConfig routes by host first (one virtual host per provider with
// hosts), then by path prefix on any other host, longest prefix first; a
// provider with prefix "/" takes the rest, else the rest gets a 404 that
// lists what is served. Every forwarding route tells the sidecar its
// provider through gRPC metadata (see providers.MetadataProvider).
func routeConfig(ups []providers.Provider) (*routev3.RouteConfiguration, error) {
	off, err := anypb.New(&extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Disabled{Disabled: true}})
	if err != nil {
		return nil, err
	}
	health := &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/health"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 200,
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: `{"status":"ok"}`}},
		}},
		TypedPerFilterConfig: map[string]*anypb.Any{extProcFilter: off},
	}
	var vhosts []*routev3.VirtualHost
	for _, p := range ups {
		if len(p.Hosts) > 0 {
			fwd, err := forward(p, "/", "")
			if err != nil {
				return nil, err
			}
			vhosts = append(vhosts, &routev3.VirtualHost{Name: clusterName(p), Domains: p.Hosts,
				Routes: []*routev3.Route{health, fwd}})
		}
	}
	byPrefix := slices.DeleteFunc(slices.Clone(ups), func(p providers.Provider) bool { return p.PathPrefix == "" })
	slices.SortStableFunc(byPrefix, func(a, b providers.Provider) int { return cmp.Compare(len(b.PathPrefix), len(a.PathPrefix)) })
	routes := []*routev3.Route{health}
	rest := false
	for _, p := range byPrefix {
		match, strip := p.PathPrefix+"/", p.PathPrefix
		if p.PathPrefix == "/" {
			match, strip, rest = "/", "", true
		}
		fwd, err := forward(p, match, strip)
		if err != nil {
			return nil, err
		}
		routes = append(routes, fwd)
	}
	if !rest {
		// The budget endpoint is the sidecar's own: any provider's route
		// carries it there, and nothing is forwarded.
		budget, err := forward(ups[0], "", "")
		if err != nil {
			return nil, err
		}
		budget.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/v1/budget"}}
		history, err := forward(ups[0], "", "")
		if err != nil {
			return nil, err
		}
		history.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/v1/budget/history"}}
		routes = append(routes, budget, history, notServed(ups, off))
	}
	vhosts = append(vhosts, &routev3.VirtualHost{Name: "llm", Domains: []string{"*"}, Routes: routes})
	return &routev3.RouteConfiguration{Name: "llm", VirtualHosts: vhosts}, nil
}

// forward sends requests under match to p, with the base URL's path in
// place of match (the prefix strip is removed on the way).
func forward(p providers.Provider, match, strip string) (*routev3.Route, error) {
	action := &routev3.RouteAction{
		ClusterSpecifier:     &routev3.RouteAction_Cluster{Cluster: clusterName(p)},
		HostRewriteSpecifier: &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: p.URL.Host},
		// LLM streams run for minutes: no overall deadline, only an idle one.
		Timeout:     durationpb.New(0),
		IdleTimeout: durationpb.New(5 * time.Minute),
	}
	if base := strings.TrimSuffix(p.URL.Path, "/"); base != "" || match != "/" {
		action.PrefixRewrite = base + "/"
	}
	md := []*corev3.HeaderValue{{Key: providers.MetadataProvider, Value: p.Name}}
	if strip != "" {
		md = append(md, &corev3.HeaderValue{Key: providers.MetadataPathPrefix, Value: strip})
	}
	per, err := anypb.New(&extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{
		Overrides: &extprocv3.ExtProcOverrides{GrpcInitialMetadata: md}}})
	if err != nil {
		return nil, err
	}
	filters := map[string]*anypb.Any{extProcFilter: per}
	if hasKey(p) {
		// This route, and only this provider's routes, carry its key.
		// An empty Any: Envoy refuses a FilterConfig with no config at all.
		if filters[credentialFilter(p)], err = anypb.New(&routev3.FilterConfig{Config: &anypb.Any{}}); err != nil {
			return nil, err
		}
	}
	return &routev3.Route{
		Name:                 "provider_" + p.Name,
		Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: match}},
		Action:               &routev3.Route_Route{Route: action},
		TypedPerFilterConfig: filters,
		// What the firewall reads to decide stays here: a provider learns
		// nothing of the organisation's users or addresses from us (the
		// sidecar also removes x-user-id and every x-aifirewall-* header).
		RequestHeadersToRemove: []string{"x-user-id", "x-forwarded-client-cert", "x-forwarded-for", "x-envoy-external-address"},
	}, nil
}

// notServed answers requests no provider takes, naming what is served.
func notServed(ups []providers.Provider, off *anypb.Any) *routev3.Route {
	var hosts, prefixes []string
	for _, p := range ups {
		hosts = append(hosts, p.Hosts...)
		if p.PathPrefix != "" {
			prefixes = append(prefixes, p.PathPrefix+"/")
		}
	}
	msg := "no LLM provider is routed for this host and path on this gateway"
	if len(hosts) > 0 {
		msg += "; hosts served: " + strings.Join(hosts, ", ")
	}
	if len(prefixes) > 0 {
		msg += "; path prefixes served: " + strings.Join(prefixes, ", ") + " (e.g. " + prefixes[0] + "v1/chat/completions)"
	}
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": msg + "; API paths: " + provider.Paths, "type": "invalid_request_error", "code": "unknown_url", "param": nil}})
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 404,
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(body)}},
		}},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "content-type", Value: "application/json"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
		TypedPerFilterConfig: map[string]*anypb.Any{extProcFilter: proto.Clone(off).(*anypb.Any)},
	}
}
