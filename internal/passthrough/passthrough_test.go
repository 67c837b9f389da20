package passthrough

import (
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// Each phase is answered in its own kind, with nothing changed: an answer
// of another kind would make Envoy fail the request.
func TestContinueAnswersEachPhaseUnchanged(t *testing.T) {
	for _, c := range []struct {
		req  *extprocv3.ProcessingRequest
		want func(*extprocv3.ProcessingResponse) bool
	}{
		{&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{}},
			func(r *extprocv3.ProcessingResponse) bool { return r.GetRequestHeaders() != nil }},
		{&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{}},
			func(r *extprocv3.ProcessingResponse) bool { return r.GetRequestBody() != nil }},
		{&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{}},
			func(r *extprocv3.ProcessingResponse) bool { return r.GetResponseHeaders() != nil }},
		{&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{}},
			func(r *extprocv3.ProcessingResponse) bool { return r.GetResponseBody() != nil }},
		{&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{}},
			func(r *extprocv3.ProcessingResponse) bool { return r.GetRequestTrailers() != nil }},
		{&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{}},
			func(r *extprocv3.ProcessingResponse) bool { return r.GetResponseTrailers() != nil }},
	} {
		r := Continue(c.req)
		if !c.want(r) {
			t.Errorf("%T answered with %T", c.req.Request, r.Response)
		}
		if r.GetRequestBody().GetResponse() != nil || r.GetResponseBody().GetResponse() != nil ||
			r.GetRequestHeaders().GetResponse() != nil || r.GetResponseHeaders().GetResponse() != nil {
			t.Errorf("%T: the answer changes something: %v", c.req.Request, r)
		}
	}
}
