package dashboard

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/ledger"
)

// report answers a report's query string (since, until, by; the same as
// `aifirewall report`), or writes the error and returns false.
func (h *Handler) report(w http.ResponseWriter, r *http.Request) (ledger.Query, []ledger.Row, bool) {
	if h.ledger == nil {
		apiError(w, http.StatusNotFound, "invalid_request_error", "no_ledger",
			"this sidecar keeps no ledger: set LEDGER_URL (sqlite:///path or postgres://...) to record spend")
		return ledger.Query{}, nil, false
	}
	now := h.now().UTC()
	v := r.URL.Query()
	since, until, by := v.Get("since"), v.Get("until"), v.Get("by")
	if since == "" {
		since = now.Format("2006-01") + "-01"
	}
	if until == "" {
		until = now.AddDate(0, 0, 1).Format(time.DateOnly)
	}
	if by == "" {
		by = "user"
	}
	q, err := ledger.ParseQuery(since, until, by)
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "invalid_report", err.Error())
		return q, nil, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	rows, err := h.ledger.Report(ctx, q)
	if err != nil {
		h.log.Error("dashboard report", "err", err)
		apiError(w, http.StatusServiceUnavailable, "api_error", "ledger_unavailable", "the ledger cannot be read just now; retry shortly")
		return q, nil, false
	}
	return q, rows, true
}

func (h *Handler) csv(w http.ResponseWriter, r *http.Request) {
	q, rows, ok := h.report(w, r)
	if !ok {
		return
	}
	name := "aifirewall-spend-by-" + q.By + "-" + q.Since.Format(time.DateOnly) + "-" + q.Until.Format(time.DateOnly) + ".csv"
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	if err := ledger.WriteCSV(w, q.By, rows); err != nil {
		h.log.Warn("dashboard CSV not sent whole", "err", err)
	}
}

// jsonRow is a report row with its cost also in decimal dollars.
type jsonRow struct {
	ledger.Row
	CostUSD string `json:"cost_usd"`
}

func (h *Handler) json(w http.ResponseWriter, r *http.Request) {
	q, rows, ok := h.report(w, r)
	if !ok {
		return
	}
	out := make([]jsonRow, len(rows))
	for i, row := range rows {
		out[i] = jsonRow{Row: row, CostUSD: billing.Nanos(row.CostNanos).Decimal()}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"since": q.Since.Format(time.DateOnly), "until": q.Until.Format(time.DateOnly),
		"by": q.By, "rows": out})
}
