package processor

import (
	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/provider"
)

// estimateCost is what the request may cost at most: its prompt and its
// output limit (or the default) for each of its n completions, at the
// dearest model it lets the provider run.
func (r *request) estimateCost(req *provider.Request) billing.Nanos {
	out := req.MaxOutput
	if out == 0 {
		out = r.s.cfg.DefaultOutputTokens
	}
	out = min(out, provider.MaxUsageTokens) * max(req.N, 1)
	u := billing.Usage{Input: req.PromptTokens, Output: out}
	return min(r.dearestPrice(req, u).Cost(u), billing.MaxCharge)
}

// price meters the response and prices it.
func (r *request) price() (billing.Usage, billing.Nanos) {
	u := r.meter.Usage()
	if r.cut {
		// The provider's usage report is not coming: the local count of
		// what passed.
		u = r.meter.Counted()
	}
	model := r.billedModel()
	_, priced := r.prices().Lookup(model)
	cost := min(r.prices().For(model).Cost(u), billing.MaxCharge)
	r.s.metrics.settled(r.user, r.up.Name, model, priced, u, cost)
	if why := r.meter.Distrusted(); why != "" {
		r.s.metrics.distrusted()
		r.log.Warn("usage reported by the upstream set aside; billed from local counts and the price table", "reason", why)
	}
	return u, cost
}

// billedModel is the model the provider says it ran when the price table
// knows it, else the one requested: a request for one model answered by a
// dearer one is billed at what ran.
func (r *request) billedModel() string {
	asked, ran := r.req.Model, r.meter.Model()
	if ran == "" || ran == asked {
		return asked
	}
	pr, known := r.prices().Lookup(ran)
	if !known {
		return asked
	}
	if pa, _ := r.prices().Lookup(asked); !pa.SameRates(pr) {
		r.s.metrics.modelSwap()
		r.log.Warn("the provider answered with another model at another price; billed at the model it ran",
			"requested_model", asked, "answered_model", ran)
	}
	return ran
}
