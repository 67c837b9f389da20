package envoy

import (
	"fmt"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// localReplies gives the errors Envoy itself answers the OpenAI error
// shape, so every error a client can hit reads the same. The sidecar's own
// refusals (which carry aifirewall dynamic metadata) are left as they are.
func localReplies(maxBody uint32) *hcmv3.LocalReplyConfig {
	notFromSidecar := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_MetadataFilter{
		MetadataFilter: &accesslogv3.MetadataFilter{
			Matcher: &matcherv3.MetadataMatcher{
				Filter: "aifirewall",
				Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "decision"}}},
				// decision is a string when present: a null match never
				// holds for it, so only its absence matches.
				Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_NullMatch_{NullMatch: &matcherv3.ValueMatcher_NullMatch{}}},
			},
			MatchIfKeyNotFound: wrapperspb.Bool(true),
		}}}
	return &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{
		mapper(status(413), fmt.Sprintf("the request body is larger than this gateway's limit of %d bytes; send a smaller request", maxBody),
			"invalid_request_error", "request_too_large"),
		mapper(and(status(400), notFromSidecar),
			"Envoy refused this request as malformed before any check (for example a percent-encoded slash or backslash in the path, or an invalid header); fix the request",
			"invalid_request_error", "malformed_request"),
		// Checked before the next one: the sidecar admitted the request,
		// then Envoy could not connect (or complete TLS) to the provider.
		mapper(and(status(503), upstreamFailed()),
			"the LLM provider could not be reached from this gateway (connection or TLS failure), so the request was not sent and nothing was billed; retry shortly, and tell your gateway operator if it persists",
			"service_unavailable", "provider_unreachable"),
		// A circuit breaker is open: this Envoy holds as many streams as it
		// is configured for (Limits.MaxStreams).
		withRetryAfter(mapper(and(status(503), responseFlags("UO")),
			"this gateway is carrying as many open requests as it is configured for, so the request was not sent and nothing was billed; retry shortly (more replicas or a higher ENVOY_MAX_STREAMS lift the limit)",
			"service_unavailable", "gateway_at_capacity")),
		mapper(and(status(503), notFromSidecar),
			"the AI firewall could not check this request (its sidecar is unreachable), so it was not forwarded; retry shortly, and tell your gateway operator if it persists",
			"service_unavailable", "firewall_unavailable"),
	}}
}

func status(code uint32) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
		StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{
			Op:    accesslogv3.ComparisonFilter_EQ,
			Value: &corev3.RuntimeUInt32{DefaultValue: code, RuntimeKey: fmt.Sprintf("aifirewall.local_reply.%d", code)},
		}}}}
}

// upstreamFailed matches Envoy's response flags for a provider it could not
// connect to (UF, which covers TLS handshakes and certificate checks) or
// had no healthy host for (UH).
func upstreamFailed() *accesslogv3.AccessLogFilter { return responseFlags("UF", "UH") }

func responseFlags(flags ...string) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{
		ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: flags}}}
}

func withRetryAfter(m *hcmv3.ResponseMapper) *hcmv3.ResponseMapper {
	m.HeadersToAdd = []*corev3.HeaderValueOption{{
		Header:       &corev3.HeaderValue{Key: "retry-after", Value: "1"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}}
	return m
}

func and(f ...*accesslogv3.AccessLogFilter) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_AndFilter{
		AndFilter: &accesslogv3.AndFilter{Filters: f}}}
}

func mapper(filter *accesslogv3.AccessLogFilter, message, typ, code string) *hcmv3.ResponseMapper {
	body, _ := structpb.NewStruct(map[string]any{"error": map[string]any{
		"message": message, "type": typ, "code": code, "param": nil}})
	return &hcmv3.ResponseMapper{
		Filter: filter,
		BodyFormatOverride: &corev3.SubstitutionFormatString{
			Format:      &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: body},
			ContentType: "application/json",
		},
	}
}
