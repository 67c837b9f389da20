package ledger

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
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
	q, err := ParseQuery(*since, *until, *by)
	if err != nil {
		return err
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
		return WriteCSV(out, q.By, rows)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tREQUESTS\tPROMPT_TOKENS\tCOMPLETION_TOKENS\tCOST_USD\n", q.By)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", r.Key, r.Requests, r.PromptTokens, r.CompletionTokens, billing.Nanos(r.CostNanos).Decimal())
	}
	return tw.Flush()
}

// WriteCSV writes a report's rows as CSV, with a header naming the grouping.
func WriteCSV(out io.Writer, by string, rows []Row) error {
	w := csv.NewWriter(out)
	w.Write([]string{by, "requests", "prompt_tokens", "completion_tokens", "cost_usd", "cost_nanos"})
	for _, r := range rows {
		w.Write([]string{cell(r.Key), strconv.FormatInt(r.Requests, 10), strconv.FormatInt(r.PromptTokens, 10),
			strconv.FormatInt(r.CompletionTokens, 10), billing.Nanos(r.CostNanos).Decimal(), strconv.FormatInt(r.CostNanos, 10)})
	}
	w.Flush()
	return w.Error()
}

// cell keeps a spreadsheet from reading a name as a formula: a name is
// any identity's, and "=HYPERLINK(...)" is a valid user name.
func cell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// ParseQuery reads a report's bounds (YYYY-MM-DD, in UTC; until is
// exclusive) and grouping, with errors that say what to send.
func ParseQuery(since, until, by string) (Query, error) {
	q := Query{By: by}
	var err error
	if q.Since, err = time.Parse(time.DateOnly, since); err != nil {
		return q, fmt.Errorf("since %q: want YYYY-MM-DD", since)
	}
	if q.Until, err = time.Parse(time.DateOnly, until); err != nil {
		return q, fmt.Errorf("until %q: want YYYY-MM-DD", until)
	}
	if !slices.Contains(Groupings, by) {
		return q, fmt.Errorf("by %q: want one of %s", by, strings.Join(Groupings, ", "))
	}
	if !q.Since.Before(q.Until) {
		return q, fmt.Errorf("since %s is not before until %s: until is the first day left out", since, until)
	}
	return q, nil
}
