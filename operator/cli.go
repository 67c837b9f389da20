package operator

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	operatorv1 "github.com/aifirewall/aifirewall/proto-gen/aifirewall/operator/v1"
)

const cliUsage = `usage: aifirewall admin [-addr host:port] COMMAND
  usage USER [DAY]          a user's limit, spend and reservations (DAY: YYYY-MM-DD, default today)
  users [DAY]               every user who spent on DAY
  set-limit USER USD        set USER's daily limit; USD 0 clears the override
  add-key USER [USD] [-groups a,b]
                            create a per-user key (printed once) with an optional daily limit and groups
  revoke-key SHA256         revoke a key by its SHA-256
  budgets                   every budget in force, with its current window's spend
  set-budget NAME WINDOW USD [-groups a,b] [-identities p,q] [-providers x] [-models 'claude-*']
            [-per user] [-action audit] [-warn 50,80] [-cutoff=false]
                            create or replace a budget (WINDOW: day, week, month, 24h, 7d, 30d)
  delete-budget NAME        remove a budget made with set-budget
  report SINCE UNTIL BY     the ledger's spend over [SINCE, UNTIL) (YYYY-MM-DD, UTC) by user, group, provider, model or day
The admin token is read from ADMIN_TOKEN; the address defaults to OPERATOR_ADDR.`

// RunCLI runs `aifirewall admin ARGS`, printing to out.
func RunCLI(ctx context.Context, args []string, defaultAddr string, out io.Writer) error {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	addr := fs.String("addr", defaultAddr, "operator API address")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		return errors.New(cliUsage)
	}
	token := os.Getenv("ADMIN_TOKEN")
	if token == "" {
		return errors.New("ADMIN_TOKEN is not set; export the operator token first")
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", *addr, err)
	}
	defer conn.Close()
	c := operatorv1.NewOperatorServiceClient(conn)
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), 10*time.Second)
	defer cancel()
	a := fs.Args()
	arg := func(i int) string {
		if i < len(a) {
			return a[i]
		}
		return ""
	}
	switch {
	case a[0] == "usage" && len(a) >= 2:
		u, err := c.GetUsage(ctx, &operatorv1.GetUsageRequest{User: a[1], Day: arg(2)})
		if err != nil {
			return err
		}
		printUsage(out, u)
	case a[0] == "users":
		r, err := c.ListUsers(ctx, &operatorv1.ListUsersRequest{Day: arg(1)})
		if err != nil {
			return err
		}
		printUsage(out, r.GetUsers()...)
	case a[0] == "set-limit" && len(a) == 3:
		r, err := c.SetLimit(ctx, &operatorv1.SetLimitRequest{User: a[1], DailyLimitUsd: a[2]})
		if err != nil {
			return err
		}
		printUsage(out, r.GetUsage())
	case a[0] == "add-key" && len(a) >= 2:
		req := &operatorv1.AddKeyRequest{User: a[1]}
		rest := a[2:]
		if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			req.DailyLimitUsd, rest = rest[0], rest[1:]
		}
		kf := flag.NewFlagSet("add-key", flag.ContinueOnError)
		kf.SetOutput(io.Discard)
		groups := kf.String("groups", "", "")
		if err := kf.Parse(rest); err != nil || kf.NArg() > 0 {
			return errors.New(cliUsage)
		}
		if *groups != "" {
			req.Groups = strings.Split(*groups, ",")
		}
		r, err := c.AddKey(ctx, req)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "key:    %s\nsha256: %s\nThe key is shown once; give it to %s now.\n", r.GetKey(), r.GetSha256(), a[1])
		if w := r.GetWarning(); w != "" {
			fmt.Fprintf(out, "WARNING: %s\n", w)
		}
	case a[0] == "revoke-key" && len(a) == 2:
		if _, err := c.RevokeKey(ctx, &operatorv1.RevokeKeyRequest{Sha256: a[1]}); err != nil {
			return err
		}
		fmt.Fprintln(out, "revoked")
	case a[0] == "budgets":
		r, err := c.ListBudgets(ctx, &operatorv1.ListBudgetsRequest{})
		if err != nil {
			return err
		}
		printBudgets(out, r.GetBudgets()...)
	case a[0] == "set-budget" && len(a) >= 4:
		spec, err := budgetFlags(a[1], a[2], a[3], a[4:])
		if err != nil {
			return err
		}
		r, err := c.PutBudget(ctx, &operatorv1.PutBudgetRequest{Budget: spec})
		if err != nil {
			return err
		}
		printBudgets(out, r.GetBudget())
	case a[0] == "report" && len(a) == 4:
		r, err := c.GetReport(ctx, &operatorv1.GetReportRequest{Since: a[1], Until: a[2], By: a[3]})
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "%s\tREQUESTS\tPROMPT_TOKENS\tCOMPLETION_TOKENS\tCOST_USD\n", strings.ToUpper(a[3]))
		for _, row := range r.GetRows() {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%s\n", row.GetKey(), row.GetRequests(), row.GetPromptTokens(), row.GetCompletionTokens(), row.GetCostUsd())
		}
		w.Flush()
	case a[0] == "delete-budget" && len(a) == 2:
		if _, err := c.DeleteBudget(ctx, &operatorv1.DeleteBudgetRequest{Name: a[1]}); err != nil {
			return err
		}
		fmt.Fprintln(out, "deleted")
	default:
		return errors.New(cliUsage)
	}
	return nil
}

// budgetFlags reads set-budget's arguments.
func budgetFlags(name, window, usd string, args []string) (*operatorv1.BudgetSpec, error) {
	fs := flag.NewFlagSet("set-budget", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	list := func(flagName, help string) *string { return fs.String(flagName, "", help) }
	groups, ids, provs, models := list("groups", ""), list("identities", ""), list("providers", ""), list("models", "")
	per, action, warn := fs.String("per", "", ""), fs.String("action", "", ""), fs.String("warn", "", "")
	cutoff := fs.Bool("cutoff", true, "")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return nil, errors.New(cliUsage)
	}
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	spec := &operatorv1.BudgetSpec{Name: name, Window: window, LimitUsd: usd, Groups: split(*groups), Identities: split(*ids),
		Providers: split(*provs), Models: split(*models), Per: *per, Action: *action}
	if !*cutoff {
		spec.Cutoff = cutoff
	}
	for _, w := range split(*warn) {
		n, err := strconv.Atoi(w)
		if err != nil {
			return nil, fmt.Errorf("-warn: %q is not a percentage", w)
		}
		spec.Warn = append(spec.Warn, int32(n))
	}
	return spec, nil
}

func printBudgets(out io.Writer, bs ...*operatorv1.BudgetInfo) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSOURCE\tWINDOW\tPERIOD\tACTION\tLIMIT_USD\tSPENT_USD\tRESERVED_USD")
	for _, b := range bs {
		spent, reserved := b.GetSpentUsd(), b.GetReservedUsd()
		if b.GetSpec().GetPer() == "user" {
			spent, reserved = "(per user)", "(per user)"
		}
		action := b.GetSpec().GetAction()
		if action == "" {
			action = "block"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.GetSpec().GetName(), b.GetSource(), b.GetSpec().GetWindow(),
			b.GetPeriod(), action, b.GetSpec().GetLimitUsd(), spent, reserved)
	}
	w.Flush()
}

func printUsage(out io.Writer, us ...*operatorv1.Usage) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "USER\tDAY\tLIMIT_USD\tSPENT_USD\tRESERVED_USD")
	for _, u := range us {
		limit := u.GetLimitUsd()
		if u.GetLimitOverridden() {
			limit += " (override)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", u.GetUser(), u.GetDay(), limit, u.GetSpentUsd(), u.GetReservedUsd())
	}
	w.Flush()
}
