package envoy

import (
	"fmt"
	"net/url"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/aifirewall/aifirewall/providers"
)

// JWT is the identity provider whose tokens name callers
// (IDENTITY_MODE=jwt): its issuer, the audiences a token must carry one
// of, and its keys: a JWKS file, or the provider's JWKS URL (https),
// which Envoy fetches at start and every ten minutes (rotated keys are
// taken up), checking its certificate as a provider's.
type JWT struct {
	Issuer    string
	Audiences []string
	JWKSFile  string
	JWKSURL   string
}

// jwksCluster is the cluster Envoy fetches a remote JWKS through.
const jwksCluster = "aifirewall_jwks"

// jwksUpstream is the cluster of JWKSURL, built as a provider's.
func jwksUpstream(o Options) (*clusterv3.Cluster, error) {
	u, err := url.Parse(o.JWT.JWKSURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("JWKS URL %q: give the identity provider's https:// URL", o.JWT.JWKSURL)
	}
	c, err := upstream(o, providers.Provider{Name: "jwks", URL: u})
	if err != nil {
		return nil, err
	}
	c.Name = jwksCluster
	if la := c.GetLoadAssignment(); la != nil {
		la.ClusterName = jwksCluster
	}
	return c, nil
}

// jwtNamespace is the filter's dynamic metadata, forwarded to ext_proc.
const jwtNamespace = "envoy.filters.http.jwt_authn"

// jwtFilter verifies the bearer token (signature by a key of the JWKS,
// issuer, audience, expiry; "alg: none" has no key and fails) and puts
// the payload, or why it failed, in its dynamic metadata for the
// firewall, which alone decides: a request without a valid token gets the
// firewall's 401 in the OpenAI error shape, not Envoy's own. A verified
// token is removed before the request goes on: no provider sees it.
func jwtFilter(j JWT) (*hcmv3.HttpFilter, error) {
	idp := &jwtv3.JwtProvider{
		Issuer:                 j.Issuer,
		Audiences:              j.Audiences,
		JwksSourceSpecifier:    &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: j.JWKSFile}}},
		Forward:                false,
		PayloadInMetadata:      "jwt_payload",
		FailedStatusInMetadata: "jwt_failure",
	}
	if j.JWKSURL != "" {
		idp.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
			HttpUri:       &corev3.HttpUri{Uri: j.JWKSURL, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: jwksCluster}, Timeout: durationpb.New(5 * time.Second)},
			CacheDuration: durationpb.New(10 * time.Minute),
			// Fetched at start, not by the first request, and again
			// before the cache ends.
			AsyncFetch: &jwtv3.JwksAsyncFetch{},
		}}
	}
	cfg, err := anypb.New(&jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"idp": idp},
		Rules: []*jwtv3.RequirementRule{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
				RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: []*jwtv3.JwtRequirement{
					{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "idp"}},
					{RequiresType: &jwtv3.JwtRequirement_AllowMissingOrFailed{AllowMissingOrFailed: &emptypb.Empty{}}},
				}}},
			}},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: jwtNamespace, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg}}, nil
}
