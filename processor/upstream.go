package processor

import (
	"context"
	"fmt"
	"strings"

	grpcmd "google.golang.org/grpc/metadata"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/provider"
	"github.com/aifirewall/aifirewall/providers"
)

// Upstream is one provider requests are forwarded to.
type Upstream struct {
	Name string
	Kind provider.Kind
	// PathPrefix is what its prefix route matches ("" for none, "/" for
	// every path no other route takes); the sidecar removes it to find
	// the API path.
	PathPrefix string
	// Key returns the credential sent upstream, read per request so that
	// a rotated Secret applies at once; used only with Config.SendKeys.
	Key func() string
	// Prices is the provider's own price table; nil: the server's.
	Prices *billing.Prices
}

// upstreams builds the server's provider table: cfg.Upstreams, or the
// one-provider shorthand.
func upstreams(cfg Config) map[string]*Upstream {
	if len(cfg.Upstreams) > 0 {
		return cfg.Upstreams
	}
	key := cfg.UpstreamKey
	return map[string]*Upstream{providers.ShorthandName: {
		Name: providers.ShorthandName, Kind: cfg.Upstream, PathPrefix: "/", Key: func() string { return key }}}
}

// pickUpstream finds the provider Envoy's route chose, from the gRPC
// metadata the route sets on this stream (never from anything the client
// sent), and the API path with that route's prefix removed.
func (r *request) pickUpstream(ctx context.Context, path, routeName string) (*Upstream, string, *apiError) {
	md, _ := grpcmd.FromIncomingContext(ctx)
	names, prefixes := md.Get(providers.MetadataProvider), md.Get(providers.MetadataPathPrefix)
	byRouteName := false
	if len(names) == 0 {
		if name, ok := httpRouteName(routeName); ok && r.s.upstreams[name] != nil {
			names, byRouteName = []string{name}, true
		}
	}
	var up *Upstream
	switch {
	case len(names) > 1 || len(prefixes) > 1:
		return nil, "", misrouted("the route sent more than one provider name")
	case len(names) == 0 && len(r.s.upstreams) == 1:
		// An Envoy configuration not written by this firewall's generator
		// (one provider, nothing to choose between).
		for _, u := range r.s.upstreams {
			up = u
		}
	case len(names) == 0 && routeName != "":
		return nil, "", misrouted(fmt.Sprintf("route %q names no provider the firewall knows", routeName))
	case len(names) == 0:
		// Every route of the generated configuration that forwards names
		// its provider: a stream naming none is a request Envoy matched to
		// no route (a CONNECT, an absolute URI to another host). Clients
		// can send those at will, so this is not the operator's alarm.
		return nil, "", &apiError{status: 404, Type: "invalid_request_error", Code: "unknown_url",
			Message: "no LLM provider is routed for this request's host and path on this gateway; send it to a provider's host or path prefix (e.g. /v1/chat/completions)"}
	default:
		if up = r.s.upstreams[names[0]]; up == nil {
			return nil, "", misrouted(fmt.Sprintf("the route names provider %q, which the firewall does not know", names[0]))
		}
	}
	if byRouteName && up.PathPrefix != "" && up.PathPrefix != "/" {
		// Envoy Gateway sends no prefix metadata: an HTTPRoute matching
		// the provider's path prefix rewrites it away on the way out (after
		// this filter), so the API path is the rest.
		if rest, ok := strings.CutPrefix(path, up.PathPrefix); ok && strings.HasPrefix(rest, "/") {
			path = rest
		}
	}
	if len(prefixes) == 1 {
		rest, ok := strings.CutPrefix(path, prefixes[0])
		if prefixes[0] != up.PathPrefix || !ok || !strings.HasPrefix(rest, "/") {
			return nil, "", misrouted(fmt.Sprintf("the route's path prefix %q does not fit provider %q", prefixes[0], up.Name))
		}
		path = rest
	}
	return up, path, nil
}

// httpRouteName reads the HTTPRoute name out of an Envoy Gateway route name
// ("httproute/<namespace>/<name>/rule/<n>/match/<m>/<host>"), which Envoy
// sends as the xds.route_name attribute when asked: Envoy Gateway has no
// per-route gRPC metadata, so there an HTTPRoute named after its provider
// names it. Route names are configuration, never the client's.
func httpRouteName(route string) (string, bool) {
	parts := strings.Split(route, "/")
	if len(parts) < 4 || parts[0] != "httproute" || parts[3] != "rule" {
		return "", false
	}
	return parts[2], true
}

// misrouted is Envoy and the sidecar disagreeing about providers (their
// providers files differ): nothing is forwarded.
func misrouted(why string) *apiError {
	return &apiError{status: 500, Type: "server_error", Code: "gateway_misconfigured",
		Message: "this gateway is misconfigured, so the request was not forwarded (" + why + "; Envoy and the firewall must be configured from the same providers file); tell your gateway operator"}
}

// forbidden is a request the egress policy refuses.
func forbidden(d *providers.Denied) *apiError {
	code := "provider_not_allowed"
	if d.Model {
		code = "model_not_allowed"
	}
	return &apiError{status: 403, Type: "permission_error", Code: code, Message: d.Msg}
}

// prices is the table this request is billed from.
func (r *request) prices() *billing.Prices {
	if r.up != nil && r.up.Prices != nil {
		return r.up.Prices
	}
	return r.s.prices
}
