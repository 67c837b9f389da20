package ledger

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/aifirewall/aifirewall/billing"
)

const reportUsage = `usage: aifirewall report [-ledger URL] [-since YYYY-MM-DD] [-until YYYY-MM-DD] [-by user|group|provider|model|day] [-csv]
  spend from the ledger (LEDGER_URL) settled from -since (default: the first of this month) until
  -until (exclusive; default: tomorrow), in UTC, grouped by -by (default: user)`

// RunReport runs `aifirewall report ARGS`, printing to out.
func RunReport(ctx context.Context, args []string, defaultURL string, now time.Time, out io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	url := fs.String("ledger", defaultURL, "")
	since := fs.String("since", now.UTC().Format("2006-01")+"-01", "")
	until := fs.String("until", now.UTC().AddDate(0, 0, 1).Format(time.DateOnly), "")
	by := fs.String("by", "user", "")
	asCSV := fs.Bool("csv", false, "")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return errors.New(reportUsage)
	}
	if *url == "" {
		return errors.New("no ledger: set LEDGER_URL or pass -ledger sqlite:///path/to/ledger.db")
	}
	q := Query{By: *by}
	var err error
	if q.Since, err = time.Parse(time.DateOnly, *since); err != nil {
		return fmt.Errorf("-since %q: want YYYY-MM-DD", *since)
	}
	if q.Until, err = time.Parse(time.DateOnly, *until); err != nil {
		return fmt.Errorf("-until %q: want YYYY-MM-DD", *until)
	}
	s, err := Open(ctx, *url)
	if err != nil {
		return err
	}
	defer s.Close()
	rows, err := s.Report(ctx, q)
	if err != nil {
		return err
	}
	if *asCSV {
		w := csv.NewWriter(out)
		w.Write([]string{q.By, "requests", "prompt_tokens", "completion_tokens", "cost_usd", "cost_nanos"})
		for _, r := range rows {
			w.Write([]string{r.Key, strconv.FormatInt(r.Requests, 10), strconv.FormatInt(r.PromptTokens, 10),
				strconv.FormatInt(r.CompletionTokens, 10), billing.Nanos(r.CostNanos).Decimal(), strconv.FormatInt(r.CostNanos, 10)})
		}
		w.Flush()
		return w.Error()
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tREQUESTS\tPROMPT_TOKENS\tCOMPLETION_TOKENS\tCOST_USD\n", q.By)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", r.Key, r.Requests, r.PromptTokens, r.CompletionTokens, billing.Nanos(r.CostNanos).Decimal())
	}
	return tw.Flush()
}
