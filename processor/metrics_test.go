package processor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsDecisionsAndUnpricedModels(t *testing.T) {
	h := newHarness(t, nil)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, false)
	h.srv.WithMetrics(m)

	x := h.open(t)
	x.requestHeaders(":method", "POST", ":path", chatPath) // no key
	for i, model := range []string{"acme/new-model", "acme/new-model", "gpt-4o-mini"} {
		x := h.open(t)
		x.requestHeaders(":method", "POST", ":path", chatPath, "authorization", "Bearer k", "content-type", "application/json", "x-request-id", string(rune('a'+i)), "x-user-id", string(rune('a'+i)))
		x.requestBody(`{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`)
		x.responseHeaders(":status", "200", "content-type", "application/json")
		x.responseChunk(`{"usage":{"prompt_tokens":1000000,"completion_tokens":0}}`, true)
		x.stream.CloseSend()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.srv.Drain(ctx)

	if got := testutil.ToFloat64(m.requests.WithLabelValues(decisionUnauthorized)); got != 1 {
		t.Errorf("unauthorized = %v", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues(decisionAllowed)); got != 3 {
		t.Errorf("allowed = %v", got)
	}
	if got := testutil.ToFloat64(m.open); got != 0 {
		t.Errorf("reservations open after settling = %v", got)
	}
	if got := testutil.ToFloat64(m.unpriced); got != 2 {
		t.Errorf("unpriced = %v", got)
	}
	// The fallback price of the harness is 1000 nanos/token: 1M tokens = $1 each.
	if got := testutil.ToFloat64(m.cost.WithLabelValues("unpriced", "default")); got != 2 {
		t.Errorf("unpriced cost = %v USD", got)
	}
	if got := testutil.ToFloat64(m.cost.WithLabelValues("gpt-4o-mini", "default")); got != 0.15 {
		t.Errorf("gpt-4o-mini cost = %v USD", got)
	}
	// Client-chosen model names never become label values.
	if n, _ := testutil.GatherAndCount(reg, "aifirewall_cost_usd_total"); n != 2 {
		t.Errorf("%d cost series", n)
	}
	out, _ := reg.Gather()
	for _, mf := range out {
		if strings.Contains(mf.String(), "acme") {
			t.Fatalf("client model name in metric %s", mf.GetName())
		}
	}
}

// aifirewall_streams_open counts the ext_proc streams open now: what to
// scale on, since idle streams cost no CPU.
func TestStreamsOpenGauge(t *testing.T) {
	h := newHarness(t, nil)
	m := NewMetrics(prometheus.NewRegistry(), false)
	h.srv.WithMetrics(m)
	var open []*exchange
	for i := range 3 {
		x := h.open(t)
		x.requestHeaders(":method", "POST", ":path", chatPath, "authorization", "Bearer k", "content-type", "application/json",
			"x-request-id", string(rune('a'+i)))
		open = append(open, x)
	}
	if got := testutil.ToFloat64(m.streams); got != 3 {
		t.Fatalf("streams open = %v, want 3", got)
	}
	for _, x := range open {
		x.stream.CloseSend()
		x.stream.Recv() // the server's end of the stream
	}
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(m.streams) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("streams open after they closed = %v", testutil.ToFloat64(m.streams))
		}
	}
}
