// Package envoy generates the Envoy configuration that puts the sidecar in
// front of an LLM upstream. Building it from go-control-plane's typed
// messages makes it valid by construction; compose, local runs and the
// end-to-end tests all use this one generator.
package envoy

import (
	"cmp"
	"fmt"
	"net"
	"strconv"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"

	"github.com/aifirewall/aifirewall/processor/provider"
	"github.com/aifirewall/aifirewall/providers"
)

// Options are the settings the Envoy configuration is built from.
type Options struct {
	ListenAddr string // where clients connect, e.g. "0.0.0.0:8000"
	AdminAddr  string // Envoy's admin interface, e.g. "127.0.0.1:9901"
	// HealthAddr, when set, is a listener answering only GET /ready from
	// the admin interface: a kubelet's readiness probe.
	HealthAddr  string
	ExtProcAddr string // where Envoy reaches the sidecar, e.g. "aifirewall:50051" or "unix:/run/aifirewall/extproc.sock"
	UpstreamURL string // UPSTREAM_BASE_URL: the one provider, serving every path
	// UpstreamKind is that provider's format (which header its key goes in);
	// UpstreamKeyEnv the variable Envoy reads its key from (UPSTREAM_API_KEY),
	// empty for an upstream that takes none (a local fake).
	UpstreamKind   provider.Kind
	UpstreamKeyEnv string
	// SecretDir is where Envoy finds the SDS files of provider keys (see
	// SecretFiles); they hold where each key is, never a key.
	SecretDir string
	// Providers, when set, replace UpstreamURL: the providers file's
	// upstreams, each routed by host and/or path prefix.
	Providers    []providers.Provider
	MaxBodyBytes uint32 // larger request bodies get 413 from Envoy
	// CACertFile verifies the upstream's TLS certificate (https upstreams).
	CACertFile string
	// MessageTimeout bounds each ext_proc reply; prompt counting of a body
	// at the size limit must fit in it.
	MessageTimeout time.Duration
	// TLS, when CertFile is set, makes the listener HTTPS; with ClientCAFile
	// it requires client certificates (mTLS) and passes the caller's URI
	// SAN (its SPIFFE ID) to the sidecar.
	TLS struct{ CertFile, KeyFile, ClientCAFile string }
	// ExtProcTLS, when CertFile is set, connects to the sidecar over mutual
	// TLS: Envoy's client certificate, the CA that signed the sidecar's, and
	// the DNS name the sidecar's certificate must carry (its SNI too).
	ExtProcTLS struct{ CertFile, KeyFile, CAFile, ServerName string }
	// Limits bound the open streams and connections (zero: the defaults).
	Limits Limits
	// JWT, when its Issuer is set, verifies the identity provider's tokens
	// before the firewall, which takes the caller from them.
	JWT JWT
	// WithoutFirewall leaves the ext_proc filter out: a plain proxy, for
	// benchmarks that measure what the sidecar adds.
	WithoutFirewall bool
}

const (
	extProcCluster        = "aifirewall_extproc"
	defaultMessageTimeout = 10 * time.Second
)

// Bootstrap builds the configuration.
func Bootstrap(o Options) (*bootstrapv3.Bootstrap, error) {
	ups, err := providerList(o)
	if err != nil {
		return nil, err
	}
	listen, err := socketAddress(o.ListenAddr, "")
	if err != nil {
		return nil, fmt.Errorf("listen address: %w", err)
	}
	admin, err := socketAddress(o.AdminAddr, "")
	if err != nil {
		return nil, fmt.Errorf("admin address: %w", err)
	}
	if o.MessageTimeout <= 0 {
		o.MessageTimeout = defaultMessageTimeout
	}
	hcm, err := connectionManager(o, ups)
	if err != nil {
		return nil, err
	}
	var clusters []*clusterv3.Cluster
	for _, p := range ups {
		c, err := upstream(o, p)
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, c)
	}
	epCluster, err := extProc(o)
	if err != nil {
		return nil, err
	}
	chain := &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{
		Name:       "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
	}}}
	if o.TLS.CertFile != "" {
		if chain.TransportSocket, err = downstreamTLS(o); err != nil {
			return nil, err
		}
	}
	listeners := []*listenerv3.Listener{{
		Name:                          "llm_ingress",
		Address:                       listen,
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(o.MaxBodyBytes),
		FilterChains:                  []*listenerv3.FilterChain{chain},
	}}
	clusters = append(clusters, epCluster)
	if o.JWT.JWKSURL != "" {
		c, err := jwksUpstream(o)
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, c)
	}
	if o.HealthAddr != "" {
		lis, c, err := healthListener(o)
		if err != nil {
			return nil, err
		}
		listeners, clusters = append(listeners, lis), append(clusters, c)
	}
	b := &bootstrapv3.Bootstrap{
		// SDS (provider keys) needs a node to name.
		Node:            &corev3.Node{Id: "aifirewall", Cluster: "aifirewall"},
		Admin:           &bootstrapv3.Admin{Address: admin},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Listeners: listeners, Clusters: clusters},
	}
	if err := applyLimits(b, o.Limits); err != nil {
		return nil, err
	}
	return b, nil
}

func connectionManager(o Options, ups []providers.Provider) (*anypb.Any, error) {
	extProc := ExtProcFilter(o)
	routes, err := routeConfig(ups)
	if err != nil {
		return nil, err
	}
	accessLog, err := anypb.New(&streamv3.StdoutAccessLog{AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{
		LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: accessLogFields()}},
	}})
	if err != nil {
		return nil, err
	}
	typed := func(m proto.Message) *anypb.Any { a, _ := anypb.New(m); return a }
	var filters []*hcmv3.HttpFilter
	if o.JWT.Issuer != "" {
		f, err := jwtFilter(o.JWT)
		if err != nil {
			return nil, err
		}
		filters = append(filters, f)
	}
	if !o.WithoutFirewall {
		filters = append(filters, &hcmv3.HttpFilter{Name: extProcFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed(extProc)}})
	}
	// After ext_proc: the sidecar never sees the key it would remove.
	creds, err := credentialFilters(o, ups)
	if err != nil {
		return nil, err
	}
	filters = append(filters, creds...)
	filters = append(filters, &hcmv3.HttpFilter{Name: "envoy.filters.http.router",
		// x-envoy-* headers would tell the provider about this proxy.
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed(&routerv3.Router{SuppressEnvoyHeaders: true})}})
	return anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix:        "llm_ingress",
		CodecType:         hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier:    &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: routes},
		LocalReplyConfig:  localReplies(o.MaxBodyBytes),
		StreamIdleTimeout: durationpb.New(5 * time.Minute),
		RequestTimeout:    durationpb.New(0),
		UseRemoteAddress:  wrapperspb.Bool(true),
		// Routing decides the provider and its credential: the path is
		// normalised before routes see it (so /openai/../anthropic/ is
		// /anthropic/ for the route and the sidecar alike), and an encoded
		// slash, which an upstream might decode differently, is refused.
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_REJECT_REQUEST,
		StripPortMode:                &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true},
		// "api.openai.com." is api.openai.com: it must reach the provider it
		// names, not the catch-all route.
		StripTrailingHostDot: true,
		GenerateRequestId:    wrapperspb.Bool(true),
		AccessLog: []*accesslogv3.AccessLog{{
			Name:       "envoy.access_loggers.stdout",
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: accessLog},
		}},
		HttpFilters: filters,
	})
}

func upstream(o Options, p providers.Provider) (*clusterv3.Cluster, error) {
	up := p.URL
	defaultPort := "80"
	if up.Scheme == "https" {
		defaultPort = "443"
	}
	addr, err := socketAddress(up.Host, defaultPort)
	if err != nil {
		return nil, fmt.Errorf("provider %s: base URL: %w", p.Name, err)
	}
	c := staticOrDNS(clusterName(p), addr)
	c.ConnectTimeout = durationpb.New(5 * time.Second)
	if up.Scheme == "https" {
		ca := cmp.Or(p.CAFile, o.CACertFile)
		if ca == "" {
			ca = "/etc/ssl/certs/ca-certificates.crt"
		}
		tlsCtx, err := anypb.New(&tlsv3.UpstreamTlsContext{
			Sni: up.Hostname(),
			CommonTlsContext: &tlsv3.CommonTlsContext{
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: ca}},
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
						SanType: tlsv3.SubjectAltNameMatcher_DNS,
						Matcher: exact(up.Hostname()),
					}},
				}},
			},
		})
		if err != nil {
			return nil, err
		}
		c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx}}
		// HTTP/2 where the provider offers it (ALPN), as their APIs do over
		// TLS: open streams share connections, so a stream costs Envoy one
		// file (the client's) instead of two.
		auto, err := anypb.New(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_AutoConfig{
			AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}})
		if err != nil {
			return nil, err
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": auto}
	}
	return c, nil
}

func staticOrDNS(name string, addr *corev3.Address) *clusterv3.Cluster {
	kind := clusterv3.Cluster_STATIC
	if addr.GetPipe() == nil && net.ParseIP(addr.GetSocketAddress().GetAddress()) == nil {
		kind = clusterv3.Cluster_STRICT_DNS
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: kind},
		DnsLookupFamily:      clusterv3.Cluster_V4_PREFERRED,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}},
			}}}},
		},
	}
}

// socketAddress parses host:port; an empty host means all interfaces.
func socketAddress(hostport, defaultPort string) (*corev3.Address, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil && defaultPort != "" {
		host, port, err = hostport, defaultPort, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%q is not host:port: %w", hostport, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%q: port %q is not a number", hostport, port)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
	}}}, nil
}

// YAML renders the configuration for `envoy -c`.
func YAML(o Options) ([]byte, error) {
	b, err := Bootstrap(o)
	if err != nil {
		return nil, err
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("envoy config invalid: %w", err)
	}
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

// accessLogFields is Envoy's JSON access log, with what the sidecar put in
// the aifirewall dynamic metadata namespace.
func accessLogFields() *structpb.Struct {
	fields := map[string]any{
		"time": "%START_TIME%", "method": "%REQ(:METHOD)%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
		"status": "%RESPONSE_CODE%", "duration_ms": "%DURATION%", "request_id": "%REQ(X-REQUEST-ID)%",
		"bytes_received": "%BYTES_RECEIVED%", "bytes_sent": "%BYTES_SENT%", "upstream": "%UPSTREAM_HOST%",
		"response_flags": "%RESPONSE_FLAGS%",
	}
	for _, k := range []string{"decision", "user", "provider", "model", "prompt_tokens", "completion_tokens", "cost_usd", "billed_from", "cutoff"} {
		fields["aifirewall_"+k] = "%DYNAMIC_METADATA(aifirewall:" + k + ")%"
	}
	st, _ := structpb.NewStruct(fields)
	return st
}

func downstreamTLS(o Options) (*corev3.TransportSocket, error) {
	common := &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: o.TLS.CertFile}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: o.TLS.KeyFile}},
	}}}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: common}
	if o.TLS.ClientCAFile != "" {
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: o.TLS.ClientCAFile}},
		}}
		ctx.RequireClientCertificate = wrapperspb.Bool(true)
	}
	a, err := anypb.New(ctx)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}
