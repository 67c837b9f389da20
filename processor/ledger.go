package processor

import (
	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/ledger"
)

// Recorder takes the ledger's record of each settled request; it must not
// wait (ledger.Writer queues and spools).
type Recorder interface{ Add(ledger.Record) }

// record hands the settled request to the ledger, if there is one.
func (r *request) record(u billing.Usage, cost billing.Nanos) {
	if r.s.cfg.Ledger == nil || r.req == nil {
		return
	}
	now := r.s.now()
	rec := ledger.Record{Time: now, RequestID: r.id, User: r.user, Groups: r.caller.Groups, Provider: r.up.Name,
		Model: r.req.Model, BilledModel: r.req.Model, Endpoint: r.route.Path,
		PromptTokens: u.PromptTokens(), CompletionTokens: u.CompletionTokens(), CachedTokens: u.CacheRead,
		CacheWriteTokens: u.CacheWrite, ReasoningTokens: u.Reasoning, CostNanos: int64(cost),
		Status: r.status, Stream: r.req.Stream, Disconnected: !r.ended, DurationMS: now.Sub(r.started).Milliseconds()}
	if r.meter != nil && !r.panicked {
		rec.BilledModel = r.billedModel()
	}
	for _, c := range r.charges {
		rec.Budgets = append(rec.Budgets, c.b.Name)
	}
	r.s.cfg.Ledger.Add(rec)
}
