package envoy

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// JWT is the identity provider whose tokens name callers
// (IDENTITY_MODE=jwt): its issuer, the audiences a token must carry one
// of, and its keys (a JWKS file: nothing is fetched at run time).
type JWT struct {
	Issuer    string
	Audiences []string
	JWKSFile  string
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
	cfg, err := anypb.New(&jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"idp": {
			Issuer:                 j.Issuer,
			Audiences:              j.Audiences,
			JwksSourceSpecifier:    &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: j.JWKSFile}}},
			Forward:                false,
			PayloadInMetadata:      "jwt_payload",
			FailedStatusInMetadata: "jwt_failure",
		}},
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
