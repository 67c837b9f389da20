package processor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/processor/provider"
	"github.com/aifirewall/aifirewall/processor/sse"
)

// maxJSONResponse bounds a buffered (non-streamed) response body kept for
// metering; past it the response is billed from the prompt count alone.
const maxJSONResponse = 8 << 20

// request is the state of one HTTP request, phase by phase:
//
//	request headers  → route, authenticate, swap credentials
//	request body     → parse, count the prompt, budget gate
//	response headers → status and content type decide how to meter
//	response body    → answer Envoy, then meter each chunk
//	end or cancel    → settle the spend, exactly once
type request struct {
	s   *Server
	log *slog.Logger

	id         string
	started    time.Time
	caller     identity.Caller
	headerUser string
	user       string
	up         *Upstream // the provider Envoy's route chose
	route      provider.Route
	req        *provider.Request
	day        string
	budget     billing.Budget // at admission, this request's reservation included
	estimate   billing.Nanos  // what was reserved
	admitted   bool           // a reservation is held: settlement must release it
	charges    []charge       // the budgets of the budgets file it counts against
	panicked   bool           // a panic ended the request: settle at the estimate

	// The stream cut-off (cutoff.go).
	cutting    bool          // the stream is ended when its cost passes room
	rooms      []room        // each budget's room for it
	room       billing.Nanos // what it may spend: the least of rooms
	roomOf     string        // that budget's name ("daily": the default one)
	bound      billing.Nanos // the most it can cost: the reservations' ceiling
	cut        bool          // it passed room: nothing more passes
	cutSent    bool          // the error event went out: the next chunk resets
	runPrice   billing.Price // the answering model's, for the running cost
	lastCost   billing.Nanos // the running cost after the last event, or a bound of it
	exact      bool          // lastCost is the count, not a bound
	priceModel string
	priced     bool

	meter     provider.Meter
	status    int
	sse       bool
	parser    sse.Parser
	held      []byte // an incomplete SSE event, held while usage may be stripped
	crPending bool   // the last event ended on CR at a chunk's end: its LF may come next
	crDropped bool   // ... and that event was dropped
	body      []byte // a JSON response body, collected for metering
	overflow  bool
	gz        *inflater // set when the upstream answered gzip despite identity
	ended     bool      // response end of stream seen
	settled   bool
	usage     billing.Usage // as settled
	cost      billing.Nanos // as settled
}

func (r *request) handle(ctx context.Context, msg *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, func()) {
	switch m := msg.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return r.requestHeaders(ctx, m.RequestHeaders, msg.GetAttributes(), msg.GetMetadataContext()), nil
	case *extprocv3.ProcessingRequest_RequestBody:
		return r.requestBody(ctx, m.RequestBody), nil
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return r.responseHeaders(m.ResponseHeaders), nil
	case *extprocv3.ProcessingRequest_ResponseBody:
		return r.responseBody(m.ResponseBody)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{}}}, nil
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{}}}, nil
	}
	return nil, nil
}

func (r *request) requestHeaders(ctx context.Context, h *extprocv3.HttpHeaders, attrs map[string]*structpb.Struct, md *corev3.Metadata) *extprocv3.ProcessingResponse {
	hm := h.GetHeaders()
	r.started = r.s.now()
	r.id = headerValue(hm, "x-request-id")
	if r.id == "" {
		// Envoy generates one; without it a unique id still lets the
		// reservation and the settlement find each other.
		r.id = fmt.Sprintf("aifw-%d-%p", time.Now().UnixNano(), r)
	}
	r.log = r.s.log.With("request_id", r.id)
	method, path := headerValue(hm, ":method"), headerValue(hm, ":path")
	if method == "CONNECT" {
		// No LLM API tunnels; such a request matches no provider's route.
		return r.deny(decisionNotFound, &apiError{status: 405, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: "CONNECT is not served by this gateway: send the API request itself (e.g. POST /v1/chat/completions) over plain HTTP to the gateway"})
	}
	up, path, e := r.pickUpstream(ctx, path, attribute(attrs, "xds.route_name"))
	if e != nil {
		if e.status >= 500 {
			r.log.Error("request not routable to a provider", "reason", e.Message)
			return r.deny(decisionMisrouted, e)
		}
		return r.deny(decisionNotFound, e)
	}
	r.up = up
	r.log = r.log.With("provider", up.Name)
	ownBudget := method == "GET" && cleanPath(path) == budgetPath
	ownHistory := method == "GET" && cleanPath(path) == historyPath

	route, ok := up.Kind.Route(method, path)
	if !ok && !ownBudget && !ownHistory {
		return r.deny(decisionNotFound, &apiError{status: 404, Type: "invalid_request_error", Code: "unknown_url",
			Message: fmt.Sprintf("%s %s is not served by this gateway; supported: %s", method, cleanPath(path), provider.Paths)})
	}
	r.route = route
	payload, failure := verifiedJWT(md)
	caller, err := r.s.cfg.Auth.Authenticate(identity.Request{
		Authorization: headerValues(hm, "authorization"),
		APIKey:        headerValues(hm, "x-api-key"),
		XFCC:          headerValues(hm, "x-forwarded-client-cert"),
		PeerURISAN:    attribute(attrs, "connection.uri_san_peer_certificate"),
		JWTPayload:    payload,
		JWTFailure:    failure,
	})
	if err != nil {
		return r.deny(decisionUnauthorized, unauthorized(err.Error()))
	}
	r.caller = caller
	r.headerUser = headerValue(hm, "x-user-id")
	if ownBudget {
		return r.budgetReply(ctx)
	}
	if ownHistory {
		return r.historyReply(ctx)
	}
	if ct := headerValue(hm, "content-type"); route.Endpoint != nil && !isJSON(ct) {
		return r.deny(decisionBadRequest, &apiError{status: 415, Type: "invalid_request_error", Code: "unsupported_media_type",
			Message: fmt.Sprintf("the request body must be JSON, sent with 'Content-Type: application/json' (got %q)", clip(ct))})
	}
	if route.Endpoint != nil && h.GetEndOfStream() {
		// Nothing to count or check: never forward it unmetered.
		return r.deny(decisionBadRequest, invalidRequest("", "the request has no body; send the JSON request body"))
	}
	if route.Endpoint == nil {
		// No body (and no model) will come: the caller and the provider
		// are all to check, by the same rules as a POST.
		if r.caller.User != "" && r.headerUser != "" && r.headerUser != r.caller.User {
			return r.deny(decisionForbidden, userOverride())
		}
		who := firstNonEmpty(r.caller.User, r.headerUser, "default")
		if d := r.s.cfg.Policy.Allow(who, up.Name, ""); d != nil {
			return r.deny(decisionForbidden, forbidden(d))
		}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{HeaderMutation: r.forwardHeaders(hm)}},
	}}
}

func (r *request) requestBody(ctx context.Context, b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	if r.route.Endpoint == nil {
		return bodyResponse(nil, nil)
	}
	req, err := r.route.Endpoint.ParseRequest(b.GetBody(), r.s.tk)
	if err != nil {
		var bad *provider.BadRequest
		if errors.As(err, &bad) {
			return r.deny(decisionBadRequest, invalidRequest(bad.Param, bad.Msg))
		}
		return r.deny(decisionBadRequest, invalidRequest("", "the request body could not be read: "+err.Error()))
	}
	r.req = req
	if e := r.resolveUser(); e != nil {
		return r.deny(decisionBadRequest, e)
	}
	r.log = r.log.With("user", r.user, "model", req.Model)
	// The egress policy, before anything is reserved or forwarded.
	if d := r.s.cfg.Policy.Allow(r.user, r.up.Name, req.Model); d != nil {
		r.log.Info("refused by the egress policy", "reason", d.Msg)
		e := forbidden(d)
		if d.Model {
			param := "model"
			e.Param = &param
		}
		return r.deny(decisionForbidden, e)
	}
	if e := r.checkChoices(req); e != nil {
		r.log.Info("refused by the egress policy", "reason", e.Message)
		return r.deny(decisionForbidden, e)
	}

	// Reserve the estimated cost atomically with the budget check, so that
	// concurrent requests cannot all pass a gate only one of them fits.
	now := r.s.now()
	r.day = billing.Day(now, r.s.cfg.Location)
	limit := r.s.cfg.DailyLimit
	if r.caller.Limit > 0 {
		limit = r.caller.Limit
	}
	estimate, bound := r.estimateCost(req), r.boundCost(req)
	amount, ceiling := r.reservation(req, estimate, bound, r.s.cfg.Cutoff)
	sctx, cancel := context.WithTimeout(ctx, r.s.cfg.StoreTimeout)
	bud, err := r.s.store.Admit(sctx, billing.Admission{User: r.user, Day: r.day, RequestID: r.id,
		Amount: amount, Ceiling: ceiling, Limit: limit, TTL: r.s.cfg.ReservationTTL})
	cancel()
	if err != nil && r.s.cfg.FailOpen {
		// Fail open: forward unchecked; the settlement lands (or is
		// spooled) and counts once the store is back.
		r.s.metrics.storeError("admit")
		r.log.Warn("budget store unavailable; admitting without a budget check (FAIL_MODE=open)", "err", err)
		bud = billing.Budget{Admitted: true, Limit: limit}
		err = nil
	}
	if err != nil {
		r.s.metrics.storeError("admit")
		r.log.Error("budget store unavailable", "err", err)
		return r.deny(decisionStoreUnavailable, unavailable("the budget store is unreachable, so the request was not forwarded; retry shortly, and tell your gateway operator if it persists"))
	}
	r.budget = bud
	if !bud.Admitted {
		reset := billing.NextReset(now, r.s.cfg.Location)
		r.log.Info("over budget", "spent_nanos", int64(bud.Spent), "reserved_nanos", int64(bud.Reserved))
		return r.deny(decisionOverBudget, overBudget(bud, reset, now))
	}
	r.bound = bound
	if r.s.cfg.Cutoff && req.Stream {
		r.addRoom(room{name: "daily", user: r.user, day: r.day, limit: limit}, bud)
	}
	if e := r.admitBudgets(ctx, now, estimate, bound); e != nil {
		if e.status == 402 {
			return r.deny(decisionOverBudget, e)
		}
		return r.deny(decisionStoreUnavailable, e)
	}
	r.admitted, r.estimate = true, estimate
	r.s.holds.add(r, r.holdsOf())
	r.s.metrics.reservation(1)
	r.s.metrics.decision(decisionAllowed)
	r.log.Debug("admitted", "prompt_tokens", req.PromptTokens, "stream", req.Stream, "reserved_nanos", int64(estimate))

	var mut *extprocv3.HeaderMutation
	if req.Body != nil {
		// The body grew (stream_options added): its length must follow.
		mut = &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			header("content-length", strconv.Itoa(len(req.Body)))}}
	}
	resp := bodyResponse(req.Body, mut)
	resp.DynamicMetadata = metadata(map[string]any{"decision": decisionAllowed, "user": r.user,
		"provider": r.up.Name, "model": req.Model, "prompt_tokens": req.PromptTokens})
	return resp
}

func (r *request) responseHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	hm := h.GetHeaders()
	r.status = statusOf(hm)
	r.sse = strings.HasPrefix(headerValue(hm, "content-type"), "text/event-stream")
	r.cutting = r.cutting && r.sse
	if r.req != nil && r.billable() {
		r.meter = r.route.Endpoint.NewMeter(r.req, r.s.tk)
	}
	mut := &extprocv3.HeaderMutation{}
	if r.admitted {
		for k, v := range r.budgetHeadersOf(r.s.now()) {
			mut.SetHeaders = append(mut.SetHeaders, header(k, v))
		}
		if r.sse && r.req.UsageInjected {
			mut.RemoveHeaders = append(mut.RemoveHeaders, "content-length")
		}
	}
	if r.meter != nil && strings.EqualFold(headerValue(hm, "content-encoding"), "gzip") {
		// The client gets the body decoded, so it can be metered (and
		// usage stripped) as it passes.
		r.gz = newInflater()
		mut.RemoveHeaders = append(mut.RemoveHeaders, "content-encoding", "content-length")
	}
	if h.GetEndOfStream() {
		r.ended = true
		r.settle()
	}
	// Response bodies stay STREAMED (the filter's default) for JSON too:
	// buffering would hold the reply and bound it by Envoy's buffer limit,
	// while metering needs only to see the bytes go by.
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{HeaderMutation: mut}},
	}}
}

// responseBody answers Envoy first and meters after, except when usage the
// client did not ask for must be cut out of the chunk before it goes on.
func (r *request) responseBody(b *extprocv3.HttpBody) (*extprocv3.ProcessingResponse, func()) {
	chunk, eos := b.GetBody(), b.GetEndOfStream()
	if r.cutSent {
		return r.afterCut(), nil
	}
	if r.meter == nil {
		r.ended = r.ended || eos
		return responseBody(nil), nil
	}
	var replaced []byte // the chunk as the client gets it, when it differs
	if r.gz != nil {
		chunk = r.inflate(chunk, eos)
		replaced = append([]byte{}, chunk...)
	}
	near := r.sse && r.cutting && !r.farFromRoom(chunk)
	if r.sse && (r.req.UsageInjected || near) {
		// Metered before it is answered: usage the client did not ask
		// for is cut out, and a stream that passes its room is ended.
		out := r.meterSSE(chunk, eos, true, near)
		if r.cut {
			return r.endStream(out), nil
		}
		if !near {
			r.passed()
		}
		r.afterChunk(eos)
		if r.gz == nil && bytes.Equal(out, chunk) {
			out = nil // nothing cut or held: Envoy passes its own bytes on
		}
		return r.withBill(responseBody(out)), nil
	}
	account := func() {
		if r.sse {
			r.meterSSE(chunk, eos, false, false)
			r.passed()
		} else {
			r.collect(chunk, eos)
		}
		r.afterChunk(eos)
	}
	if eos {
		// The last chunk is metered before it is answered, so that the
		// reply carries the bill to Envoy's access log.
		account()
		return r.withBill(responseBody(replaced)), nil
	}
	return responseBody(replaced), account
}

func (r *request) afterChunk(eos bool) {
	if eos {
		r.ended = true
		r.settle()
	}
}

// billable says the response is one the provider charges for.
func (r *request) billable() bool { return r.status >= 200 && r.status < 300 }

// finish runs when Envoy closes the stream. A response that began but did
// not end (the client went away, the upstream broke off) is billed for
// what was seen.
func (r *request) finish() {
	if r.gz != nil {
		r.gz.Abandon()
	}
	if r.meter != nil && !r.ended && !r.cut {
		r.parser.Flush(func(ev sse.Event) { r.meter.Event(ev) })
		if r.body != nil && !r.overflow {
			r.meter.Body(r.body)
		}
		r.log.Info("stream ended before the response did; billing what was streamed")
	}
	r.settle()
}

// settle prices the request and hands the charge to the store, once. A
// request admitted but never answered (or answered with an error) settles
// at zero, which releases its reservation; one that panicked settles at
// its estimate, since what it consumed is unknown.
func (r *request) settle() {
	if r.settled || !r.admitted {
		return
	}
	r.settled = true
	r.s.holds.remove(r)
	r.s.metrics.reservation(-1)
	var u billing.Usage
	var cost billing.Nanos
	if r.meter != nil && !r.panicked {
		func() {
			// Settlement must happen whatever pricing does.
			defer func() {
				if p := recover(); p != nil {
					r.recovered(p)
				}
			}()
			u, cost = r.price()
		}()
	}
	if r.panicked {
		u, cost = billing.Usage{}, r.estimate
	}
	r.usage, r.cost = u, cost
	r.log.Info("settled",
		"prompt_tokens", u.PromptTokens(), "completion_tokens", u.CompletionTokens(),
		"cached_tokens", u.CacheRead, "reasoning_tokens", u.Reasoning,
		"cost_nanos", int64(cost), "status", r.status, "complete", r.ended)
	r.s.cfg.Settler.Settle(billing.Settlement{User: r.user, Day: r.day, RequestID: r.id, Amount: cost}, r.log)
	r.settleCharges(cost)
	r.record(u, cost)
}

// resolveUser names the budget holder: the caller's own identity when it
// has one (a per-user key, a workload), else x-user-id, the body's user
// field, or "default".
func (r *request) resolveUser() *apiError {
	if r.caller.User != "" {
		if r.headerUser != "" && r.headerUser != r.caller.User {
			return userOverride()
		}
		r.user = r.caller.User
		return nil
	}
	r.user = firstNonEmpty(r.headerUser, r.req.User, "default")
	return validUser(r.user)
}
