package processor

import (
	"encoding/json"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
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
func attribute(attrs map[string]*structpb.Struct, name string) string {
	for _, st := range attrs {
		if v, ok := st.GetFields()[name]; ok {
			return v.GetStringValue()
		}
	}
	return ""
}
