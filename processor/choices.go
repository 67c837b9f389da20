package processor

import (
	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/provider"
)

// checkChoices holds every model the request lets the provider run (its
// fallbacks, an auto router, a preset) to the egress policy, as "model"
// is: a forbidden model must not run behind an allowed first choice.
func (r *request) checkChoices(req *provider.Request) *apiError {
	for _, a := range req.Alternatives {
		if d := r.s.cfg.Policy.Allow(r.user, r.up.Name, a.Model); d != nil {
			e := forbidden(d)
			e.Message = "'" + a.Field + "': " + d.Msg
			e.Param = &a.Field
			return e
		}
	}
	if req.OpenChoice != "" {
		if d := r.s.cfg.Policy.AllowAnyModel(r.user, r.up.Name, req.OpenChoice); d != nil {
			e := forbidden(d)
			e.Param = &req.OpenChoice
			return e
		}
	}
	return nil
}

// dearestPrice is the price of the dearest model the request may run, for
// its usage u: what its reservation must cover.
func (r *request) dearestPrice(req *provider.Request, u billing.Usage) billing.Price {
	if req.OpenChoice != "" {
		// The provider may pick any model: reserve for the dearest.
		return r.prices().Ceiling()
	}
	best := r.prices().For(req.Model)
	for _, a := range req.Alternatives {
		if p := r.prices().For(a.Model); p.Cost(u) > best.Cost(u) {
			best = p
		}
	}
	return best
}
