package operator

import (
	"context"
	"encoding/json"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/budgets"
	"github.com/aifirewall/aifirewall/ledger"
	operatorv1 "github.com/aifirewall/aifirewall/proto-gen/aifirewall/operator/v1"
)

// specJSON is a budget's definition as stored: the budgets file's fields.
func specJSON(p *operatorv1.BudgetSpec) []byte {
	b, _ := json.Marshal(map[string]any{"name": p.GetName(), "identities": p.GetIdentities(), "groups": p.GetGroups(),
		"providers": p.GetProviders(), "models": p.GetModels(), "window": p.GetWindow(), "per": p.GetPer(),
		"limit_usd": p.GetLimitUsd(), "action": p.GetAction(), "warn": p.GetWarn(), "cutoff": p.Cutoff})
	return b
}

func specOf(b *budgets.Budget) *operatorv1.BudgetSpec {
	warn := make([]int32, len(b.Warn))
	for i, w := range b.Warn {
		warn[i] = int32(w)
	}
	return &operatorv1.BudgetSpec{Name: b.Name, Identities: b.Identities, Groups: b.Groups, Providers: b.Providers,
		Models: b.Models, Window: string(b.Window), Per: b.Per, LimitUsd: b.LimitUSD, Action: b.Action, Warn: warn, Cutoff: b.Cutoff}
}

// info is a budget in force and, for a shared counter, its current window.
func (s *Server) info(ctx context.Context, b *budgets.Budget, fromAPI bool) (*operatorv1.BudgetInfo, error) {
	in := &operatorv1.BudgetInfo{Spec: specOf(b), Source: "file", LimitNanos: int64(b.Limit)}
	if fromAPI {
		in.Source = "api"
	}
	now := s.Now()
	period, _ := b.Window.Period(now, s.Location)
	in.Period = period
	if b.Per == "user" {
		return in, nil
	}
	st, err := s.Store.Window(ctx, b.Counter(""), period, b.Window.Buckets(now), b.Limit)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "budget store: %v", err)
	}
	in.LimitNanos, in.SpentNanos, in.ReservedNanos = int64(st.Limit), int64(st.Spent), int64(st.Reserved)
	in.SpentUsd, in.ReservedUsd = st.Spent.Decimal(), st.Reserved.Decimal()
	return in, nil
}

func (s *Server) budgetsInForce() (*budgets.File, error) {
	if s.Budgets == nil || s.Defs == nil {
		return nil, status.Error(codes.FailedPrecondition, "this sidecar's budget store keeps no budgets")
	}
	f := s.Budgets.Current.Load()
	if f == nil {
		f = &budgets.File{}
	}
	return f, nil
}

func (s *Server) PutBudget(ctx context.Context, req *operatorv1.PutBudgetRequest) (*operatorv1.PutBudgetResponse, error) {
	f, err := s.budgetsInForce()
	if err != nil {
		return nil, err
	}
	def := specJSON(req.GetBudget())
	b, err := budgets.ParseBudget("budget", def)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	for _, have := range f.Budgets {
		if have.Name == b.Name && !f.FromAPI[b.Name] {
			return nil, status.Errorf(codes.FailedPrecondition, "budget %q is in the budgets file; change it there", b.Name)
		}
	}
	if err := s.Defs.PutBudgetDef(ctx, b.Name, def); err != nil {
		return nil, status.Errorf(codes.Unavailable, "budget store: %v", err)
	}
	s.Log.Info("operator put a budget", "budget", b.Name, "window", b.Window, "limit", b.Limit.String(), "action", b.Action)
	s.Budgets.Refresh(ctx)
	in, err := s.info(ctx, b, true)
	if err != nil {
		return nil, err
	}
	return &operatorv1.PutBudgetResponse{Budget: in}, nil
}

func (s *Server) ListBudgets(ctx context.Context, _ *operatorv1.ListBudgetsRequest) (*operatorv1.ListBudgetsResponse, error) {
	f, err := s.budgetsInForce()
	if err != nil {
		return nil, err
	}
	resp := &operatorv1.ListBudgetsResponse{}
	for i := range f.Budgets {
		in, err := s.info(ctx, &f.Budgets[i], f.FromAPI[f.Budgets[i].Name])
		if err != nil {
			return nil, err
		}
		resp.Budgets = append(resp.Budgets, in)
	}
	return resp, nil
}

func (s *Server) DeleteBudget(ctx context.Context, req *operatorv1.DeleteBudgetRequest) (*operatorv1.DeleteBudgetResponse, error) {
	f, err := s.budgetsInForce()
	if err != nil {
		return nil, err
	}
	for _, have := range f.Budgets {
		if have.Name == req.GetName() && !f.FromAPI[have.Name] {
			return nil, status.Errorf(codes.FailedPrecondition, "budget %q is in the budgets file; remove it there", have.Name)
		}
	}
	ok, err := s.Defs.DeleteBudgetDef(ctx, req.GetName())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "budget store: %v", err)
	}
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no budget %q was made through the operator API", req.GetName())
	}
	s.Log.Info("operator deleted a budget", "budget", req.GetName())
	s.Budgets.Refresh(ctx)
	return &operatorv1.DeleteBudgetResponse{}, nil
}

func (s *Server) GetReport(ctx context.Context, req *operatorv1.GetReportRequest) (*operatorv1.GetReportResponse, error) {
	if s.Ledger == nil {
		return nil, status.Error(codes.FailedPrecondition, "this sidecar keeps no ledger: set LEDGER_URL")
	}
	q, err := ledger.ParseQuery(req.GetSince(), req.GetUntil(), req.GetBy())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	rows, err := s.Ledger.Report(ctx, q)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "ledger: %v", err)
	}
	resp := &operatorv1.GetReportResponse{}
	for _, r := range rows {
		resp.Rows = append(resp.Rows, &operatorv1.ReportRow{Key: r.Key, Requests: r.Requests, PromptTokens: r.PromptTokens,
			CompletionTokens: r.CompletionTokens, CostNanos: r.CostNanos, CostUsd: billing.Nanos(r.CostNanos).Decimal()})
	}
	return resp, nil
}
