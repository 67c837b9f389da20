package processor

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/budgets"
)

// charge is a request's place in one budget of the budgets file: the
// counter it counts against, that counter's window, and what admission
// found there.
type charge struct {
	b        *budgets.Budget
	counter  string // the store's name of the counter
	period   string // the window's name: 2026-12-01, 2026-W49, 2026-12, rolling-24h
	buckets  []string
	reset    time.Time
	bud      billing.Budget // at admission
	reserved bool           // a reservation is held (an audit budget past its limit holds none)
}

// admitBudgets reserves the estimate on every budget of the budgets file
// the request matches, after the default budget admitted it. One
// blocking budget without room refuses the request: the reservations
// made so far are released and the 402 names that budget. Budgets are
// taken in the file's order; each check-and-reserve is atomic on its own
// counter, so every budget's overshoot stays within one reservation
// whatever the concurrency. A request refused by a later budget briefly
// holds room on the earlier ones: others may be refused for it, never
// admitted past a limit.
func (r *request) admitBudgets(ctx context.Context, now time.Time, estimate, bound billing.Nanos) *apiError {
	if r.s.cfg.Budgets == nil {
		return nil
	}
	f := r.s.cfg.Budgets.Load()
	if f == nil {
		return nil
	}
	for i := range f.Budgets {
		b := &f.Budgets[i]
		if !b.Matches(r.user, r.caller.Groups, r.up.Name, r.req.Model) {
			continue
		}
		c := charge{b: b, counter: b.Counter(r.user)}
		c.period, c.reset = b.Window.Period(now, r.s.cfg.Location)
		c.buckets = b.Window.Buckets(now)
		amount, ceiling := r.reservation(r.req, estimate, bound, b.CutsOff(r.s.cfg.Cutoff))
		sctx, cancel := context.WithTimeout(ctx, r.s.cfg.StoreTimeout)
		bud, err := r.s.store.Admit(sctx, billing.Admission{User: c.counter, Day: c.period, RequestID: r.id,
			Amount: amount, Ceiling: ceiling, Limit: b.Limit, TTL: r.s.cfg.ReservationTTL, Buckets: c.buckets})
		cancel()
		if err != nil && r.s.cfg.FailOpen {
			r.s.metrics.storeError("admit")
			bud, err = billing.Budget{Admitted: true, Limit: b.Limit}, nil
		}
		if err != nil {
			r.s.metrics.storeError("admit")
			r.log.Error("budget store unavailable", "budget", b.Name, "err", err)
			r.release()
			return unavailable("the budget store is unreachable, so the request was not forwarded; retry shortly, and tell your gateway operator if it persists")
		}
		c.bud, c.reserved = bud, bud.Admitted
		if b.Per != "user" {
			r.s.metrics.budgetUsed(b.Name, bud)
		}
		if !bud.Admitted && !b.Audit() {
			r.log.Info("over budget", "budget", b.Name, "period", c.period, "spent_nanos", int64(bud.Spent), "reserved_nanos", int64(bud.Reserved))
			r.release()
			return budgetExhausted(c, now)
		}
		if !bud.Admitted {
			r.log.Warn("over an audit budget; admitted", "budget", b.Name, "period", c.period, "spent_nanos", int64(bud.Spent))
			r.s.metrics.overAuditBudget(b.Name)
		}
		if bud.Admitted && b.CutsOff(r.s.cfg.Cutoff) && r.req.Stream {
			r.addRoom(room{name: b.Name, user: c.counter, day: c.period, buckets: c.buckets, limit: b.Limit}, bud)
		}
		r.charges = append(r.charges, c)
	}
	return nil
}

// release gives back what admission reserved for a request that will not
// be forwarded: each reservation settles at zero.
func (r *request) release() {
	if r.budget.Admitted {
		r.s.cfg.Settler.Settle(billing.Settlement{User: r.user, Day: r.day, RequestID: r.id}, r.log)
	}
	for _, c := range r.charges {
		if c.reserved {
			r.s.cfg.Settler.Settle(billing.Settlement{User: c.counter, Day: c.period, RequestID: r.id}, r.log)
		}
	}
	r.charges = nil
}

// holdsOf are the reservations an admitted request keeps renewed.
func (r *request) holdsOf() []billing.Hold {
	hs := []billing.Hold{{User: r.user, Day: r.day, RequestID: r.id}}
	for _, c := range r.charges {
		if c.reserved {
			hs = append(hs, billing.Hold{User: c.counter, Day: c.period, RequestID: r.id})
		}
	}
	return hs
}

// settleCharges bills cost to every budget the request counted against
// (a rolling window's: to its bucket of now, when the spend happened).
func (r *request) settleCharges(cost billing.Nanos) {
	for _, c := range r.charges {
		set := billing.Settlement{User: c.counter, Day: c.period, RequestID: r.id, Amount: cost}
		if b := c.b.Window.Buckets(r.s.now()); b != nil {
			set.Bucket = b[0]
		}
		r.s.cfg.Settler.Settle(set, r.log)
		r.s.metrics.budgetCharged(c.b.Name, cost)
	}
}

// tightest is the budget with the least room among the default one and
// the blocking budgets the request counts against, for the budget
// headers: its name, standing and reset.
func (r *request) tightest(defaultReset time.Time) (string, billing.Budget, time.Time) {
	name, bud, reset := "daily", r.budget, defaultReset
	for _, c := range r.charges {
		if !c.b.Audit() && c.bud.Remaining() < bud.Remaining() {
			name, bud, reset = c.b.Name, c.bud, c.reset
		}
	}
	return name, bud, reset
}

// warnings name the budgets past one of their warning thresholds, or past
// their limit (audit), as this request's admission found them.
func (r *request) warnings() []string {
	var out []string
	for _, c := range r.charges {
		limit := c.bud.Limit
		if limit <= 0 {
			continue
		}
		used := c.bud.Spent + c.bud.Reserved
		if !c.reserved {
			out = append(out, fmt.Sprintf("%s: over its %s limit (audit: not refused)", c.b.Name, limit))
			continue
		}
		// Integer percent of the limit, rounded down: money is integers.
		pct := int64(used) * 100 / int64(limit)
		reached := 0
		for _, w := range c.b.Warn {
			if pct >= int64(w) {
				reached = w
			}
		}
		if reached > 0 {
			out = append(out, fmt.Sprintf("%s: %d%% of %s used", c.b.Name, reached, limit))
		}
	}
	return out
}

// budgetHeadersOf are the budget headers of an admitted request's answer.
func (r *request) budgetHeadersOf(now time.Time) map[string]string {
	name, bud, reset := r.tightest(billing.NextReset(now, r.s.cfg.Location))
	h := budgetHeaders(bud, reset, map[string]string{"x-aifirewall-budget-name": name})
	if w := r.warnings(); len(w) > 0 {
		h["x-aifirewall-budget-warning"] = strings.Join(w, "; ")
	}
	return h
}

// budgetExhausted is the 402 of a budget of the budgets file.
func budgetExhausted(c charge, now time.Time) *apiError {
	b := c.bud
	wait := int64(c.reset.Sub(now).Round(time.Second) / time.Second)
	inFlight := ""
	if b.Reserved > 0 {
		inFlight = fmt.Sprintf(" (plus %s held by requests in flight)", b.Reserved)
	}
	msg := fmt.Sprintf("budget %q exceeded: spent %s%s of its %s limit for the %s %s; it resets at %s (in %ds). Ask your gateway operator to raise it, or retry after the reset.",
		c.b.Name, b.Spent, inFlight, b.Limit, c.b.Window, c.period, c.reset.UTC().Format(time.RFC3339), wait)
	if c.buckets != nil {
		msg = fmt.Sprintf("budget %q exceeded: spent %s%s of its %s limit in the last %s; room frees as that spend ages out, the oldest of it at %s (in %ds). Ask your gateway operator to raise it, or retry later.",
			c.b.Name, b.Spent, inFlight, b.Limit, c.b.Window, c.reset.UTC().Format(time.RFC3339), wait)
	}
	return &apiError{status: 402, Type: "budget_exceeded", Code: "budget_exceeded", Message: msg,
		headers: budgetHeaders(b, c.reset, map[string]string{"retry-after": strconv.FormatInt(max(wait, 1), 10),
			"x-aifirewall-budget-name": c.b.Name})}
}
