package envoy

import (
	"fmt"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ExtProcFilter is the firewall's ext_proc filter as every Envoy in front of
// it must run it; the Istio EnvoyFilter (deploy/istio) is checked against it.
func ExtProcFilter(o Options) *extprocv3.ExternalProcessor {
	if o.MessageTimeout <= 0 {
		o.MessageTimeout = defaultMessageTimeout
	}
	ep := &extprocv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: extProcCluster}}},
		FailureModeAllow: false, // never forward a request the firewall did not see
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_BUFFERED,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			ResponseBodyMode:    extprocv3.ProcessingMode_STREAMED,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		AllowModeOverride: true,
		// The sidecar sets the exact length when it rewrites a body, so
		// providers get a Content-Length rather than a chunked body.
		AllowContentLengthHeader: true,
		MessageTimeout:           durationpb.New(o.MessageTimeout),
		MaxMessageTimeout:        durationpb.New(3 * o.MessageTimeout),
		StatusOnError:            &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		StatPrefix:               "aifirewall",
		// The verified client certificate's URI SAN: a workload's SPIFFE ID.
		RequestAttributes: []string{"connection.uri_san_peer_certificate"},
		// Envoy keeps only the dynamic metadata namespaces listed here; the
		// access log reads the sidecar's from "aifirewall".
		MetadataOptions: &extprocv3.MetadataOptions{ReceivingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{
			Untyped: []string{"aifirewall"}}},
	}
	if o.JWT.Issuer != "" {
		// The verified token's payload, or why it failed, from jwt_authn.
		ep.MetadataOptions.ForwardingNamespaces = &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{jwtNamespace}}
	}
	return ep
}

func extProc(o Options) (*clusterv3.Cluster, error) {
	address := o.ExtProcAddr
	var addr *corev3.Address
	if path, ok := strings.CutPrefix(address, "unix:"); ok {
		// A sidecar in the same pod or host: a Unix socket skips the
		// loopback TCP stack on every ext_proc message.
		addr = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}}
	} else {
		var err error
		if addr, err = socketAddress(address, ""); err != nil {
			return nil, fmt.Errorf("ext_proc address: %w", err)
		}
	}
	c := staticOrDNS(extProcCluster, addr)
	c.ConnectTimeout = durationpb.New(time.Second)
	h2, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	if err != nil {
		return nil, err
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2}
	if o.ExtProcTLS.CertFile != "" {
		if c.TransportSocket, err = extProcTLS(o); err != nil {
			return nil, err
		}
	}
	// Envoy asks the sidecar's gRPC health service; a draining sidecar
	// answers NOT_SERVING and stops getting new requests.
	c.HealthChecks = []*corev3.HealthCheck{{
		Timeout:            durationpb.New(time.Second),
		Interval:           durationpb.New(5 * time.Second),
		UnhealthyThreshold: wrapperspb.UInt32(2),
		HealthyThreshold:   wrapperspb.UInt32(1),
		HealthChecker:      &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{}},
	}}
	return c, nil
}

// extProcTLS is Envoy's side of mutual TLS to a sidecar across a network.
func extProcTLS(o Options) (*corev3.TransportSocket, error) {
	t := o.ExtProcTLS
	val := &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: t.CAFile}}}
	if t.ServerName != "" {
		val.MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exact(t.ServerName)}}
	}
	a, err := anypb.New(&tlsv3.UpstreamTlsContext{
		Sni: t.ServerName,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols: []string{"h2"},
			TlsCertificates: []*tlsv3.TlsCertificate{{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: t.CertFile}},
				PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: t.KeyFile}},
			}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: val},
		},
	})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}
