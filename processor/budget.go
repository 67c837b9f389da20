package processor

import (
	"context"
	"encoding/json"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/aifirewall/aifirewall/billing"
)

// budgetPath is answered by the sidecar itself, never forwarded: the
// caller's own limit, spend, reservations and reset time.
const budgetPath = "/v1/budget"

// BudgetReport is the body of GET /v1/budget. Amounts are decimal USD
// strings (and exact nano-dollar integers), never floats.
type BudgetReport struct {
	User string `json:"user"`
	Day  string `json:"day"`
	Standing
	// Budgets are those of the budgets file that apply to the caller
	// (some only to certain providers or models: see their scope).
	Budgets []BudgetStanding `json:"budgets,omitempty"`
}

// Standing is where a budget stands: its limit, spend, open reservations,
// what remains, and when it resets.
type Standing struct {
	LimitUSD      string `json:"limit_usd"`
	SpentUSD      string `json:"spent_usd"`
	ReservedUSD   string `json:"reserved_usd"`
	RemainingUSD  string `json:"remaining_usd"`
	LimitNanos    int64  `json:"limit_nanos"`
	SpentNanos    int64  `json:"spent_nanos"`
	ReservedNanos int64  `json:"reserved_nanos"`
	Reset         string `json:"reset"`
}

func standingOf(b billing.Budget, reset time.Time) Standing {
	return Standing{LimitUSD: b.Limit.Decimal(), SpentUSD: b.Spent.Decimal(), ReservedUSD: b.Reserved.Decimal(), RemainingUSD: b.Remaining().Decimal(),
		LimitNanos: int64(b.Limit), SpentNanos: int64(b.Spent), ReservedNanos: int64(b.Reserved), Reset: reset.UTC().Format(time.RFC3339)}
}

// BudgetStanding is one budget of the budgets file as it stands for the
// caller.
type BudgetStanding struct {
	Name      string   `json:"name"`
	Window    string   `json:"window"`
	Period    string   `json:"period"`
	Action    string   `json:"action"`
	Providers []string `json:"providers,omitempty"`
	Models    []string `json:"models,omitempty"`
	Standing
}

// ownUser names the caller of the sidecar's own endpoints, as a budgeted
// request would be named.
func (r *request) ownUser() *apiError {
	r.user = firstNonEmpty(r.caller.User, r.headerUser, "default")
	if r.caller.User != "" && r.headerUser != "" && r.headerUser != r.caller.User {
		return userOverride()
	}
	return validUser(r.user)
}

// jsonReply answers the client with body, from the sidecar itself.
func jsonReply(body []byte, details string) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_OK},
			Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{header("content-type", "application/json")}},
			Body:    body,
			Details: details,
		},
	}}
}

func (r *request) budgetReply(ctx context.Context) *extprocv3.ProcessingResponse {
	if e := r.ownUser(); e != nil {
		return r.deny(decisionBadRequest, e)
	}
	limit := r.s.cfg.DailyLimit
	if r.caller.Limit > 0 {
		limit = r.caller.Limit
	}
	now := r.s.now()
	day := billing.Day(now, r.s.cfg.Location)
	sctx, cancel := context.WithTimeout(ctx, r.s.cfg.StoreTimeout)
	b, err := r.s.store.Budget(sctx, r.user, day, limit)
	cancel()
	if err != nil {
		r.s.metrics.storeError("budget")
		return r.deny(decisionStoreUnavailable, unavailable("the budget store is unreachable; retry shortly"))
	}
	report := BudgetReport{User: r.user, Day: day, Standing: standingOf(b, billing.NextReset(now, r.s.cfg.Location))}
	if report.Budgets, err = r.standings(ctx, now); err != nil {
		r.s.metrics.storeError("budget")
		return r.deny(decisionStoreUnavailable, unavailable("the budget store is unreachable; retry shortly"))
	}
	body, _ := json.Marshal(report)
	return jsonReply(body, "aifirewall_budget")
}

// standings reads every budget of the budgets file that applies to the
// caller.
func (r *request) standings(ctx context.Context, now time.Time) ([]BudgetStanding, error) {
	if r.s.cfg.Budgets == nil || r.s.cfg.Budgets.Load() == nil {
		return nil, nil
	}
	var out []BudgetStanding
	f := r.s.cfg.Budgets.Load()
	for i := range f.Budgets {
		bg := &f.Budgets[i]
		if !bg.AppliesTo(r.user, r.caller.Groups) {
			continue
		}
		period, reset := bg.Window.Period(now, r.s.cfg.Location)
		sctx, cancel := context.WithTimeout(ctx, r.s.cfg.StoreTimeout)
		b, err := r.s.store.Window(sctx, bg.Counter(r.user), period, bg.Window.Buckets(now), bg.Limit)
		cancel()
		if err != nil {
			return nil, err
		}
		out = append(out, BudgetStanding{Name: bg.Name, Window: string(bg.Window), Period: period, Action: bg.Action,
			Providers: bg.Providers, Models: bg.Models, Standing: standingOf(b, reset)})
	}
	return out, nil
}

// deny answers the client with e, counting and recording the decision.
func (r *request) deny(decision string, e *apiError) *extprocv3.ProcessingResponse {
	r.s.metrics.decision(decision)
	resp := immediate(e)
	fields := map[string]any{"decision": decision}
	if r.user != "" {
		fields["user"] = r.user
	}
	resp.DynamicMetadata = metadata(fields)
	return resp
}

// withBill adds the settled usage and cost to resp's dynamic metadata, for
// Envoy's access log.
func (r *request) withBill(resp *extprocv3.ProcessingResponse) *extprocv3.ProcessingResponse {
	if r.settled {
		fields := map[string]any{
			"user": r.user, "model": r.req.Model,
			"prompt_tokens": r.usage.PromptTokens(), "completion_tokens": r.usage.CompletionTokens(),
			"cost_usd": r.cost.Decimal(),
		}
		if r.cut {
			fields["billed_from"], fields["cutoff"] = "local_count", r.roomOf
		}
		resp.DynamicMetadata = metadata(fields)
	}
	return resp
}

// metadata puts fields in the aifirewall namespace of Envoy's dynamic
// metadata.
func metadata(fields map[string]any) *structpb.Struct {
	for k, v := range fields {
		if n, ok := v.(int64); ok {
			fields[k] = float64(n) // structpb numbers; token counts fit exactly
		}
	}
	inner, err := structpb.NewStruct(fields)
	if err != nil {
		return nil
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{"aifirewall": structpb.NewStructValue(inner)}}
}
