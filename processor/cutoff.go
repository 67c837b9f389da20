package processor

import (
	"context"
	"fmt"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/provider"
	"github.com/aifirewall/aifirewall/processor/sse"
)

// A stream is cut off when it would pass the tightest budget that cuts
// off (with STREAM_CUTOFF, the daily one and each blocking budget of the
// file that does not set cutoff: false; without, those that set cutoff:
// true):
//
//   - At admission each such budget reserves the stream's room: half of
//     what is free (limit - spent - open reservations), at least the usual
//     estimate, at most the request's whole bound (its prompt and its
//     max_tokens, or the model's output limit). Its room there is that
//     reservation, capped at what was free.
//   - While the stream passes near its room, each event is metered before
//     it is passed on: the prompt (counted at admission) and the output
//     text counted as it comes, priced at the model that answers. A chunk
//     that could not pass the room even at one token a byte is answered
//     first and metered after, like any chunk, and its text is not counted
//     then: the running cost is bounded instead (what is not counted yet
//     taken at a token a byte), and counted only when that bound comes
//     near the room, so a stream far from it costs no more than one that
//     is not cut off. When the running cost
//     passes the room, the stream asks each budget for more (Store.Extend,
//     atomic in the store): all that is free when it is the budget's only
//     open reservation, else half of what is free (or what it needs, if
//     more), up to its bound (or twice what it costs so far, when the
//     provider answered with a dearer model than the bound was priced at:
//     a few doublings, not a store call per event). Streams thus share a
//     budget by taking turns at halves of what is left, and a lone stream
//     can use all of it.
//   - Every room is at most its reservation and was at most what was free
//     when it was granted, so spent plus the rooms of all open streams
//     stays within the limit, whatever the concurrency; a stream passes its
//     room by the one event that crosses it, so a budget passes its limit
//     by at most one chunk per stream cut off.
//   - When no more room comes, the event that crossed is the last to pass;
//     an error event in the API's own shape follows, the rest is dropped,
//     the request is settled from the local count, and the next chunk
//     Envoy sends is answered with a reset, which ends the upstream
//     request.
//   - A request that is not streamed cannot be cut: it reserves its whole
//     bound.

// room is a budget's part in a stream's cut-off.
type room struct {
	name        string // "daily": the default budget
	user, day   string // the store's counter and period
	buckets     []string
	limit, room billing.Nanos
}

// fallbackMaxOutput bounds the output of a model the price table gives no
// limit for.
const fallbackMaxOutput = 128_000

// reservation is what a budget reserves for req (amount) and, for a
// stream that may be cut off, the most it may reserve (ceiling): such a
// stream reserves half of what is free, at least its prompt, since its
// room can grow as it goes.
func (r *request) reservation(req *provider.Request, estimate, bound billing.Nanos, cuts bool) (amount, ceiling billing.Nanos) {
	switch {
	case !cuts:
		return estimate, 0
	case req.Stream:
		u := billing.Usage{Input: req.PromptTokens}
		return min(r.dearestPrice(req, u).Cost(u), bound), bound
	default:
		return max(estimate, bound), 0
	}
}

// boundCost is the most req can cost: its prompt and its whole output
// bound (max_tokens, else the model's output limit) for each completion,
// at the dearest model it lets the provider run.
func (r *request) boundCost(req *provider.Request) billing.Nanos {
	out := req.MaxOutput
	if out == 0 {
		p := r.dearestPrice(req, billing.Usage{Input: req.PromptTokens, Output: 1})
		out = p.MaxOutput
		if out == 0 {
			out = fallbackMaxOutput
		}
	}
	out = min(out, provider.MaxUsageTokens) * max(req.N, 1)
	u := billing.Usage{Input: req.PromptTokens, Output: out}
	return min(r.dearestPrice(req, u).Cost(u), billing.MaxCharge)
}

// addRoom records what budget name left a stream it admitted. A stream
// admitted without a reservation (FAIL_MODE=open, the store down) has no
// room to hold it to.
func (r *request) addRoom(rm room, b billing.Budget) {
	if b.Held == 0 {
		return
	}
	rm.room = b.Room()
	r.rooms = append(r.rooms, rm)
	r.cutting = true
	r.narrowest()
}

// narrowest sets the stream's room to its budgets' least.
func (r *request) narrowest() {
	for i, rm := range r.rooms {
		if i == 0 || rm.room < r.room {
			r.room, r.roomOf = rm.room, rm.name
		}
	}
}

// grow asks every budget whose room cost passes for more; it reports
// whether the stream now has room for cost. A store that cannot be
// reached ends the stream, unless FAIL_MODE=open.
func (r *request) grow(cost billing.Nanos) bool {
	for i := range r.rooms {
		rm := &r.rooms[i]
		if rm.room >= cost {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.s.cfg.StoreTimeout)
		b, err := r.s.store.Extend(ctx, billing.Admission{User: rm.user, Day: rm.day, RequestID: r.id, Buckets: rm.buckets,
			Amount: cost - rm.room, Ceiling: max(r.bound, 2*cost), Limit: rm.limit})
		cancel()
		if err != nil {
			r.s.metrics.storeError("extend")
			if r.s.cfg.FailOpen {
				r.log.Warn("budget store unavailable; the stream goes on without its cut-off (FAIL_MODE=open)", "err", err)
				r.cutting = false
				return true
			}
			r.log.Error("budget store unavailable; ending the stream at its room", "budget", rm.name, "err", err)
			return false
		}
		if b.Admitted {
			rm.room = b.Room()
		}
	}
	r.narrowest()
	return r.room >= cost
}

// event meters one SSE event; before it passes (canCut), one that takes
// the stream past a room that cannot grow is the last to pass, and after
// the cut nothing passes and nothing more is counted.
func (r *request) event(ev sse.Event, canCut bool) (drop bool) {
	if r.cut {
		return true
	}
	drop = r.meter.Event(ev)
	if r.cutting && canCut {
		r.lastCost, r.exact = r.costOf(r.meter.Counted()), true
		if r.lastCost > r.room && !r.grow(r.lastCost) {
			r.cut = true
		}
	}
	return drop
}

// passed bounds the running cost after a chunk that was answered first,
// without counting: the text not counted yet is taken at a token a byte.
func (r *request) passed() {
	if r.cutting {
		r.lastCost, r.exact = r.costOf(r.meter.Bound()), false
	}
}

// farFromRoom says chunk cannot take the stream past its room, so it may
// be answered first and metered after, like any chunk: its text is at
// most one token a byte. Before the first event names the answering
// model, that is priced at the dearest model the request lets the
// provider run. Not while the stream holds back part of an event (only
// the metered-first path passes it on).
func (r *request) farFromRoom(chunk []byte) bool {
	if len(r.held) > 0 || r.cut {
		return false
	}
	n := int64(len(chunk))
	if !r.priced {
		u := billing.Usage{Input: r.req.PromptTokens, Output: n}
		p := r.dearestPrice(r.req, u)
		return billing.AddSat(p.Cost(billing.Usage{Input: u.Input}), billing.MulSat(n, max(p.Output, p.Reasoning))) <= r.room
	}
	per := max(r.runPrice.Output, r.runPrice.Reasoning)
	far := func() bool { return billing.AddSat(r.lastCost, billing.MulSat(n, per)) <= r.room }
	if far() {
		return true
	}
	if !r.exact {
		// The bound was too rough to tell: count.
		r.lastCost, r.exact = r.costOf(r.meter.Counted()), true
	}
	return far()
}

// costOf prices usage u at the model answering the stream.
func (r *request) costOf(u billing.Usage) billing.Nanos {
	if m := r.meter.Model(); m != r.priceModel || !r.priced {
		r.priceModel, r.priced = m, true
		r.runPrice = r.prices().For(r.req.Model)
		if p, known := r.prices().Lookup(m); m != "" && known {
			r.runPrice = p
		}
	}
	return r.runPrice.Cost(u)
}

// endStream is the error event that closes a cut stream, after the part
// of chunk that passed; the request is settled now, from the local count.
func (r *request) endStream(passed []byte) *extprocv3.ProcessingResponse {
	r.cutSent = true
	r.settle()
	msg := fmt.Sprintf("budget exceeded while streaming: this answer was stopped when its cost reached %s, the room budget %q had left for it; "+
		"what was streamed is billed. Ask your gateway operator to raise the budget, or retry after it resets.", r.room, r.roomOf)
	r.log.Info("stream cut off at its budget; billed from the local count", "budget", r.roomOf,
		"room_nanos", int64(r.room), "cost_nanos", int64(r.cost))
	r.s.metrics.cutoff(r.roomOf)
	return r.withBill(responseBody(append(passed, r.route.Endpoint.StreamError(msg)...)))
}

// afterCut answers a chunk that came after the cut: a reset, since the
// response has begun, which also ends the upstream request.
func (r *request) afterCut() *extprocv3.ProcessingResponse {
	return immediate(&apiError{status: 402, Type: "budget_exceeded", Code: "budget_exceeded",
		Message: "budget exceeded while streaming; the stream was ended"})
}
