package processor

import (
	"context"
	"encoding/json"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/ledger"
)

// historyPath is answered by the sidecar itself from the ledger: the
// caller's own spend, day by day, for the last 31 days.
const historyPath = "/v1/budget/history"

// Reporter reads the ledger.
type Reporter interface {
	Report(ctx context.Context, q ledger.Query) ([]ledger.Row, error)
}

// HistoryDay is one day of GET /v1/budget/history.
type HistoryDay struct {
	Day              string `json:"day"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	CostUSD          string `json:"cost_usd"`
	CostNanos        int64  `json:"cost_nanos"`
}

func (r *request) historyReply(ctx context.Context) *extprocv3.ProcessingResponse {
	if e := r.ownUser(); e != nil {
		return r.deny(decisionBadRequest, e)
	}
	if r.s.cfg.History == nil {
		return r.deny(decisionNotFound, &apiError{status: 404, Type: "invalid_request_error", Code: "unknown_url",
			Message: "this gateway keeps no spend history (no ledger is configured); GET /v1/budget shows today's budget"})
	}
	now := r.s.now().UTC()
	until := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rows, err := r.s.cfg.History.Report(qctx, ledger.Query{Since: until.AddDate(0, 0, -31), Until: until, By: "day", User: r.user})
	cancel()
	if err != nil {
		r.log.Error("ledger unavailable for a history", "err", err)
		return r.deny(decisionStoreUnavailable, unavailable("the spend history cannot be read just now; retry shortly"))
	}
	days := []HistoryDay{}
	for _, row := range rows {
		days = append(days, HistoryDay{Day: row.Key, Requests: row.Requests, PromptTokens: row.PromptTokens,
			CompletionTokens: row.CompletionTokens, CostUSD: billing.Nanos(row.CostNanos).Decimal(), CostNanos: row.CostNanos})
	}
	body, _ := json.Marshal(map[string]any{"user": r.user, "days": days})
	return jsonReply(body, "aifirewall_budget_history")
}

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
