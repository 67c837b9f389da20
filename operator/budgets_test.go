package operator

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/budgets"
	"github.com/aifirewall/aifirewall/ledger"
	operatorv1 "github.com/aifirewall/aifirewall/proto-gen/aifirewall/operator/v1"
)

// Budgets made, listed and deleted through the operator API join the
// file's in force at once; the file's own are changed in the file.
func TestBudgetsThroughTheAPI(t *testing.T) {
	store := billing.NewMemStore()
	file := filepath.Join(t.TempDir(), "budgets.yaml")
	os.WriteFile(file, []byte("budgets:\n  - {name: org-month, window: month, limit_usd: \"100\"}\n"), 0o600)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src := &budgets.Source{Path: file, Defs: store, Log: log}
	if err := src.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	unary, stream := TokenAuth(token)
	gs := grpc.NewServer(grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))
	c := serve(t, gs, &Server{Store: store, Keys: store, Limit: billing.NanosPerUSD, Location: time.UTC, Log: log, Now: time.Now,
		Budgets: src, Defs: store})
	ctx := authed(token)

	put := func(spec *operatorv1.BudgetSpec) (*operatorv1.PutBudgetResponse, error) {
		return c.PutBudget(ctx, &operatorv1.PutBudgetRequest{Budget: spec})
	}
	r, err := put(&operatorv1.BudgetSpec{Name: "payments-month", Groups: []string{"payments"}, Window: "month", LimitUsd: "250", Warn: []int32{80}})
	if err != nil || r.GetBudget().GetSource() != "api" || r.GetBudget().GetLimitNanos() != 250*int64(billing.NanosPerUSD) {
		t.Fatalf("put: %v %v", r, err)
	}
	if f := src.Current.Load(); len(f.Budgets) != 2 || f.Budgets[1].Name != "payments-month" || !f.FromAPI["payments-month"] {
		t.Fatalf("in force after put: %+v", f)
	}
	for _, c := range []struct {
		spec *operatorv1.BudgetSpec
		code codes.Code
		want string
	}{
		{&operatorv1.BudgetSpec{Name: "x", Window: "fortnight", LimitUsd: "1"}, codes.InvalidArgument, "window"},
		{&operatorv1.BudgetSpec{Name: "x", Window: "day", LimitUsd: "-1"}, codes.InvalidArgument, "limit_usd"},
		{&operatorv1.BudgetSpec{Name: "Bad Name", Window: "day", LimitUsd: "1"}, codes.InvalidArgument, "name"},
		{&operatorv1.BudgetSpec{Name: "org-month", Window: "day", LimitUsd: "1"}, codes.FailedPrecondition, "budgets file"},
	} {
		if _, err := put(c.spec); status.Code(err) != c.code || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %s naming %q", c.spec, err, c.code, c.want)
		}
	}
	list, err := c.ListBudgets(ctx, &operatorv1.ListBudgetsRequest{})
	if err != nil || len(list.GetBudgets()) != 2 || list.GetBudgets()[0].GetSource() != "file" {
		t.Fatalf("list: %v %v", list, err)
	}
	if _, err := c.DeleteBudget(ctx, &operatorv1.DeleteBudgetRequest{Name: "org-month"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("deleting the file's budget: %v", err)
	}
	if _, err := c.DeleteBudget(ctx, &operatorv1.DeleteBudgetRequest{Name: "payments-month"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteBudget(ctx, &operatorv1.DeleteBudgetRequest{Name: "payments-month"}); status.Code(err) != codes.NotFound {
		t.Fatalf("deleting it again: %v", err)
	}
	if f := src.Current.Load(); len(f.Budgets) != 1 {
		t.Fatalf("in force after delete: %+v", f.Budgets)
	}
}

// GetReport sums the ledger, and says when there is none.
func TestReportThroughTheAPI(t *testing.T) {
	ctx := context.Background()
	lg, err := ledger.OpenSQLite(ctx, filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	lg.Append(ctx, []ledger.Record{{Time: at, RequestID: "a", User: "alice", Model: "gpt-4o", CostNanos: 5},
		{Time: at, RequestID: "b", User: "alice", Model: "gpt-4o", CostNanos: 7}})
	store := billing.NewMemStore()
	unary, stream := TokenAuth(token)
	srv := &Server{Store: store, Keys: store, Limit: billing.NanosPerUSD, Location: time.UTC,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now, Ledger: lg}
	c := serve(t, grpc.NewServer(grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream)), srv)
	r, err := c.GetReport(authed(token), &operatorv1.GetReportRequest{Since: "2026-12-01", Until: "2026-12-02", By: "user"})
	if err != nil || len(r.GetRows()) != 1 || r.GetRows()[0].GetRequests() != 2 || r.GetRows()[0].GetCostUsd() != "0.000000012" {
		t.Fatalf("report: %v %v", r, err)
	}
	if _, err := c.GetReport(authed(token), &operatorv1.GetReportRequest{Since: "2026-12-01", Until: "2026-12-02", By: "colour"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("by colour: %v", err)
	}
	none := client(t, store)
	if _, err := none.GetReport(authed(token), &operatorv1.GetReportRequest{Since: "2026-12-01", Until: "2026-12-02", By: "user"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("without a ledger: %v", err)
	}
}
