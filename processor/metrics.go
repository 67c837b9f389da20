package processor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aifirewall/aifirewall/billing"
)

// Metrics are the processor's Prometheus series. Model labels are limited
// to models of the price table ("unpriced" otherwise), so a client sending
// random model names cannot blow up the series count.
type Metrics struct {
	requests    *prometheus.CounterVec
	tokens      *prometheus.HistogramVec
	cost        *prometheus.CounterVec
	unpriced    prometheus.Counter
	phase       *prometheus.HistogramVec
	storeErrors *prometheus.CounterVec
	open        prometheus.Gauge
	streams     prometheus.Gauge
	distrust    prometheus.Counter
	swaps       prometheus.Counter
	panics      prometheus.Counter
	userCost    *prometheus.CounterVec // nil unless per-user series are enabled
	budgetCost  *prometheus.CounterVec // by budget of the budgets file
	auditOver   *prometheus.CounterVec
	cutoffs     *prometheus.CounterVec
	budgetUse   *prometheus.GaugeVec
}

// Decisions a request can end its request phase with.
const (
	decisionAllowed          = "allowed"
	decisionUnauthorized     = "unauthorized"
	decisionOverBudget       = "over_budget"
	decisionBadRequest       = "bad_request"
	decisionNotFound         = "not_found"
	decisionStoreUnavailable = "store_unavailable"
	decisionForbidden        = "forbidden" // the egress policy refused it
	decisionMisrouted        = "misrouted" // Envoy named no provider the sidecar knows
)

// NewMetrics registers the series with reg. perUser adds a cost series per
// user: one series per budget holder, so off by default.
func NewMetrics(reg prometheus.Registerer, perUser bool) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aifirewall_requests_total", Help: "Requests by admission decision.",
		}, []string{"decision"}),
		// OpenTelemetry GenAI semantic conventions: gen_ai.client.token.usage.
		tokens: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gen_ai_client_token_usage", Help: "Tokens used per request, by token type, model and provider.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 12),
		}, []string{"gen_ai_token_type", "gen_ai_request_model", "gen_ai_provider_name"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aifirewall_cost_usd_total", Help: "Spend billed, in USD, by model and provider (the providers file's names).",
		}, []string{"gen_ai_request_model", "gen_ai_provider_name"}),
		unpriced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aifirewall_unpriced_model_requests_total", Help: "Requests billed at the fallback price because their model is in no price table.",
		}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "aifirewall_extproc_phase_duration_seconds", Help: "Time the sidecar spent on one ext_proc message, by phase.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 0.25, 1},
		}, []string{"phase"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aifirewall_store_errors_total", Help: "Budget store calls that failed, by operation.",
		}, []string{"op"}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "aifirewall_reservations_open", Help: "Requests admitted by this sidecar whose reservation is not settled yet.",
		}),
		// What to scale on: open streams cost memory and connections, not
		// CPU, so a CPU autoscaler never sees them.
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "aifirewall_streams_open", Help: "ext_proc streams open on this sidecar: the requests its Envoy is carrying, streamed answers included.",
		}),
		distrust: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aifirewall_upstream_usage_rejected_total", Help: "Responses whose usage report held a number out of range, billed from local counts instead.",
		}),
		swaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aifirewall_answered_model_price_differs_total", Help: "Responses from a model priced differently from the one requested, billed at the model that ran.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aifirewall_request_panics_total", Help: "Requests failed by a panic in the sidecar (settled at their estimate).",
		}),
	}
	// Budgets are the operator's file's: a bounded label.
	m.budgetCost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aifirewall_budget_cost_usd_total", Help: "Spend billed to each budget of the budgets file, in USD.",
	}, []string{"budget"})
	m.auditOver = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aifirewall_budget_audit_exceeded_total", Help: "Requests admitted past the limit of an audit budget.",
	}, []string{"budget"})
	m.cutoffs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aifirewall_stream_cutoffs_total", Help: "Streams ended when they would pass a budget (\"daily\": the default one).",
	}, []string{"budget"})
	// As this sidecar's last admission found it, for the budgets one
	// counter holds (not per: user); across sidecars, take the max.
	m.budgetUse = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "aifirewall_budget_utilisation_ratio", Help: "Spent and reserved over the limit of each shared budget of the budgets file, at this sidecar's last admission.",
	}, []string{"budget"})
	reg.MustRegister(m.requests, m.tokens, m.cost, m.unpriced, m.phase, m.storeErrors, m.open, m.streams, m.distrust, m.swaps, m.panics,
		m.budgetCost, m.auditOver, m.budgetUse, m.cutoffs)
	if perUser {
		m.userCost = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aifirewall_user_cost_usd_total", Help: "Spend billed, in USD, by user (METRICS_PER_USER).",
		}, []string{"user"})
		reg.MustRegister(m.userCost)
	}
	return m
}

func (m *Metrics) decision(d string) {
	if m != nil {
		m.requests.WithLabelValues(d).Inc()
	}
}

func (m *Metrics) observePhase(phase string, start time.Time) {
	if m != nil {
		m.phase.WithLabelValues(phase).Observe(time.Since(start).Seconds())
	}
}

func (m *Metrics) storeError(op string) {
	if m != nil {
		m.storeErrors.WithLabelValues(op).Inc()
	}
}

func (m *Metrics) stream(delta float64) {
	if m != nil {
		m.streams.Add(delta)
	}
}

func (m *Metrics) reservation(delta float64) {
	if m != nil {
		m.open.Add(delta)
	}
}

func (m *Metrics) settled(user, prov, model string, priced bool, u billing.Usage, cost billing.Nanos) {
	if m == nil {
		return
	}
	if m.userCost != nil {
		m.userCost.WithLabelValues(user).Add(float64(cost) / float64(billing.NanosPerUSD))
	}
	if !priced {
		model = "unpriced"
		m.unpriced.Inc()
	}
	for typ, n := range map[string]int64{"input": u.Input, "cached_input": u.CacheRead, "cache_write": u.CacheWrite,
		"output": u.Output, "reasoning": u.Reasoning} {
		if n > 0 {
			m.tokens.WithLabelValues(typ, model, prov).Observe(float64(n))
		}
	}
	m.cost.WithLabelValues(model, prov).Add(float64(cost) / float64(billing.NanosPerUSD))
}

func (m *Metrics) distrusted() {
	if m != nil {
		m.distrust.Inc()
	}
}

func (m *Metrics) modelSwap() {
	if m != nil {
		m.swaps.Inc()
	}
}

func (m *Metrics) budgetCharged(budget string, cost billing.Nanos) {
	if m != nil {
		m.budgetCost.WithLabelValues(budget).Add(float64(cost) / float64(billing.NanosPerUSD))
	}
}

func (m *Metrics) budgetUsed(budget string, b billing.Budget) {
	if m != nil && b.Limit > 0 {
		m.budgetUse.WithLabelValues(budget).Set(float64(b.Spent+b.Reserved) / float64(b.Limit))
	}
}

func (m *Metrics) overAuditBudget(budget string) {
	if m != nil {
		m.auditOver.WithLabelValues(budget).Inc()
	}
}

func (m *Metrics) cutoff(budget string) {
	if m != nil {
		m.cutoffs.WithLabelValues(budget).Inc()
	}
}

func (m *Metrics) panicked() {
	if m != nil {
		m.panics.Inc()
	}
}
