package processor

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/aifirewall/aifirewall/billing"
)

// apiError is an error a client receives, in OpenAI's shape.
type apiError struct {
	status  int
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Code    string  `json:"code"`
	Param   *string `json:"param"`
	headers map[string]string
}

func (e *apiError) Error() string { return e.Message }

func unauthorized(msg string) *apiError {
	return &apiError{status: 401, Message: msg, Type: "authentication_error", Code: "invalid_api_key"}
}

func invalidRequest(param, msg string) *apiError {
	e := &apiError{status: 400, Message: msg, Type: "invalid_request_error", Code: "invalid_request"}
	if param != "" {
		e.Param = &param
	}
	return e
}

func userOverride() *apiError {
	return &apiError{status: 403, Type: "permission_error", Code: "user_override_forbidden",
		Message: "x-user-id cannot name another user: this caller's budget is its own; remove the header"}
}

func unavailable(msg string) *apiError {
	return &apiError{status: 503, Message: msg, Type: "service_unavailable", Code: "service_unavailable",
		headers: map[string]string{"retry-after": "1"}}
}

// immediate turns e into the reply that makes Envoy answer the client
// itself; nothing is forwarded upstream.
func immediate(e *apiError) *extprocv3.ProcessingResponse {
	body, _ := json.Marshal(struct {
		Error *apiError `json:"error"`
	}{e})
	set := []*corev3.HeaderValueOption{header("content-type", "application/json")}
	for k, v := range e.headers {
		set = append(set, header(k, v))
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(e.status)},
			Headers: &extprocv3.HeaderMutation{SetHeaders: set},
			Body:    body,
			Details: "aifirewall_" + e.Code,
		},
	}}
}

// header is a header to set, replacing any value it had. Values go in
// raw_value: Envoy ignores value when raw_value is used elsewhere.
func header(key, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: key, RawValue: []byte(value)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// headerValues returns every value of the (lower-case) header key.
func headerValues(h *corev3.HeaderMap, key string) []string {
	var out []string
	for _, hv := range h.GetHeaders() {
		if hv.GetKey() != key {
			continue
		}
		if len(hv.GetRawValue()) > 0 {
			out = append(out, string(hv.GetRawValue()))
		} else {
			out = append(out, hv.GetValue())
		}
	}
	return out
}

func headerValue(h *corev3.HeaderMap, key string) string {
	if v := headerValues(h, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func statusOf(h *corev3.HeaderMap) int {
	n, _ := strconv.Atoi(headerValue(h, ":status"))
	return n
}

// attribute reads an Envoy request attribute sent to the ext_proc filter.
// jwtNamespace is the dynamic metadata of Envoy's jwt_authn filter, which
// the generated configuration forwards to ext_proc: the payload of the
// token it verified (jwt_payload), or why it refused one (jwt_failure).
const jwtNamespace = "envoy.filters.http.jwt_authn"

func verifiedJWT(md *corev3.Metadata) (map[string]any, string) {
	ns := md.GetFilterMetadata()[jwtNamespace]
	if p := ns.GetFields()["jwt_payload"].GetStructValue(); p != nil {
		return p.AsMap(), ""
	}
	if f := ns.GetFields()["jwt_failure"].GetStructValue(); f != nil {
		return nil, f.GetFields()["message"].GetStringValue()
	}
	return nil, ""
}

func attribute(attrs map[string]*structpb.Struct, name string) string {
	for _, st := range attrs {
		if v, ok := st.GetFields()[name]; ok {
			return v.GetStringValue()
		}
	}
	return ""
}

func overBudget(b billing.Budget, reset, now time.Time) *apiError {
	wait := int64(reset.Sub(now).Round(time.Second) / time.Second)
	inFlight := ""
	if b.Reserved > 0 {
		inFlight = fmt.Sprintf(" (plus %s held by requests in flight)", b.Reserved)
	}
	return &apiError{status: 402, Type: "budget_exceeded", Code: "budget_exceeded",
		Message: fmt.Sprintf("daily budget exceeded: spent %s%s of a %s limit today; the budget resets at %s (in %ds). Ask your gateway operator to raise the limit, or retry after the reset.",
			b.Spent, inFlight, b.Limit, reset.UTC().Format(time.RFC3339), wait),
		headers: budgetHeaders(b, reset, map[string]string{"retry-after": strconv.FormatInt(max(wait, 1), 10)})}
}

// budgetHeaders adds the budget headers every answer to an authenticated
// request carries, 2xx and 402 alike, so a client can show where it stands
// and when it may go on.
func budgetHeaders(b billing.Budget, reset time.Time, h map[string]string) map[string]string {
	if h == nil {
		h = map[string]string{}
	}
	h["x-aifirewall-budget-limit"] = b.Limit.Decimal()
	h["x-aifirewall-budget-remaining"] = b.Remaining().Decimal()
	h["x-aifirewall-budget-reset"] = reset.UTC().Format(time.RFC3339)
	return h
}

// bodyResponse answers a request body phase, replacing the body when body
// is not nil.
func bodyResponse(body []byte, mut *extprocv3.HeaderMutation) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: commonBody(body, mut)}}}
}

// responseBody answers a response body chunk, replacing it when body is
// not nil.
func responseBody(body []byte) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: commonBody(body, nil)}}}
}

func commonBody(body []byte, mut *extprocv3.HeaderMutation) *extprocv3.CommonResponse {
	common := &extprocv3.CommonResponse{HeaderMutation: mut}
	if body != nil {
		common.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: body}}
	}
	return common
}

// validUser rejects user ids that could not be a budget key.
func validUser(u string) *apiError {
	if len(u) > 256 {
		return invalidRequest("user", "the user id is longer than 256 bytes; send a shorter x-user-id or 'user'")
	}
	if strings.HasPrefix(u, "budget=") {
		// The budgets' counters are named so in the store.
		return invalidRequest("user", "a user id may not start with 'budget='; choose another")
	}
	for _, c := range u {
		if unicode.IsControl(c) || c == '{' || c == '}' {
			return invalidRequest("user", "the user id contains a control character or a brace; use letters, digits and punctuation")
		}
	}
	return nil
}

func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// cleanPath is a path without its query, clipped for messages.
func cleanPath(p string) string {
	p, _, _ = strings.Cut(p, "?")
	return clip(p)
}

// clip shortens a client-supplied value echoed in an error message.
func clip(s string) string {
	if len(s) > 100 {
		return strings.ToValidUTF8(s[:100], "") + "…"
	}
	return s
}
