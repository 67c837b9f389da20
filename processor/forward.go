package processor

import (
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// consumed are the request headers the firewall reads or owns. None of them
// leaves for the provider: a client's credential is for this gateway, and
// user names and workload identities are the organisation's business.
var consumed = []string{"authorization", "x-api-key", "x-user-id", "x-forwarded-client-cert"}

// forwardHeaders is what the sidecar changes on the request before Envoy
// forwards it: consumed headers and every x-aifirewall-* one (ours, or a
// look-alike) removed, the provider's default headers added, and identity
// encoding asked for so that the answer can be read as it passes.
//
// The provider's key is put on by Envoy (its credential injector, after
// this filter), never here, unless SendKeys says this deployment has no
// proxy that can (Istio's every-sidecar variant; see the README).
func (r *request) forwardHeaders(hm *corev3.HeaderMap) *extprocv3.HeaderMutation {
	mut := &extprocv3.HeaderMutation{RemoveHeaders: append([]string{}, consumed...)}
	for _, h := range hm.GetHeaders() {
		if k := h.GetKey(); strings.HasPrefix(k, "x-aifirewall-") && !slices.Contains(mut.RemoveHeaders, k) {
			mut.RemoveHeaders = append(mut.RemoveHeaders, k)
		}
	}
	if r.s.cfg.SendKeys && r.up.Key != nil {
		for k, v := range r.up.Kind.AuthHeaders(r.up.Key()) {
			mut.SetHeaders = append(mut.SetHeaders, header(k, v))
		}
	}
	for k, v := range r.up.Kind.DefaultHeaders() {
		if headerValue(hm, k) == "" {
			mut.SetHeaders = append(mut.SetHeaders, header(k, v))
		}
	}
	mut.SetHeaders = append(mut.SetHeaders, header("accept-encoding", "identity"))
	return mut
}
