package processor

import (
	"context"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aifirewall/aifirewall/billing"
)

func (h *harness) budget(user string) billing.Budget {
	b, _ := h.store.Budget(context.Background(), user, billing.Day(time.Now(), time.UTC), billing.NanosPerUSD)
	return b
}

// n completions reserve n times the output limit.
func TestReservationCoversEveryCompletion(t *testing.T) {
	h := newHarness(t, nil)
	price, _ := h.srv.prices.Lookup("gpt-4o-mini")
	for _, c := range []struct {
		user, n string
		out     int64
	}{{"one", "", 1000}, {"many", `"n":128,`, 128 * 1000}} {
		x := h.open(t)
		x.requestHeaders(authed("x-user-id", c.user, "x-request-id", c.user)...)
		body := `{"model":"gpt-4o-mini",` + c.n + `"max_tokens":1000,"messages":[]}`
		if st, msg := immediateStatus(x.requestBody(body)); st != 0 {
			t.Fatalf("%s: %d %s", c.user, st, msg)
		}
		prompt := int64(h.srv.tk.CountChat("gpt-4o-mini", nil))
		if got, want := h.budget(c.user).Reserved, price.Cost(billing.Usage{Input: prompt, Output: c.out}); got != want {
			t.Fatalf("%s: reserved %d, want %d", c.user, got, want)
		}
	}
}

// A panic fails the request it happens in; the next request is served.
func TestPanicFailsOneRequestOnly(t *testing.T) {
	h := newHarness(t, nil)
	h.srv.prices.OnUnknown = func(model string) { panic("pricing broke on " + model) }
	x := h.open(t)
	x.requestHeaders(authed()...)
	if err := x.stream.Send(requestBodyMsg(`{"model":"no-such-model","messages":[]}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := x.stream.Recv(); status.Code(err) != codes.Internal {
		t.Fatalf("stream after a panic: %v, want an Internal error", err)
	}
	y := h.open(t)
	y.requestHeaders(authed("x-request-id", "r2")...)
	if st, body := immediateStatus(y.requestBody(`{"model":"gpt-4o","messages":[]}`)); st != 0 {
		t.Fatalf("next request: %d %s", st, body)
	}
}

// A request that panics after admission settles at its estimate: what it
// consumed is unknown, and its reservation must not linger.
func TestPanicAfterAdmissionSettlesAtEstimate(t *testing.T) {
	h := newHarness(t, nil)
	x := h.open(t)
	x.requestHeaders(authed("x-user-id", "boom")...)
	x.requestBody(`{"model":"gpt-4o-mini","max_tokens":10,"messages":[]}`)
	reserved := h.budget("boom").Reserved
	if reserved == 0 {
		t.Fatal("nothing reserved")
	}
	r := &request{s: h.srv, log: h.srv.log, admitted: true, estimate: reserved, user: "boom",
		day: billing.Day(time.Now(), time.UTC), id: "r1"}
	if r.guard(func() { panic("meter broke") }) {
		t.Fatal("guard reported success")
	}
	if err := h.srv.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b := h.budget("boom"); b.Spent != reserved || b.Reserved != 0 {
		t.Fatalf("after the panic: %+v, want spent = the estimate %d and nothing reserved", b, reserved)
	}
}

// The bill prices the model the provider says it ran.
func TestAnsweredModelIsBilled(t *testing.T) {
	h := newHarness(t, nil)
	for _, c := range []struct{ user, asked, ran, priced string }{
		{"swap", "gpt-4o-mini", "o1-pro", "o1-pro"},
		{"snapshot", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"},
		{"unknown", "gpt-4o-mini", "some-model-we-never-heard-of", "gpt-4o-mini"},
	} {
		x := h.open(t)
		x.requestHeaders(authed("x-user-id", c.user, "x-request-id", c.user)...)
		x.requestBody(`{"model":"` + c.asked + `","messages":[]}`)
		x.responseHeaders(":status", "200", "content-type", "application/json")
		x.responseChunk(`{"model":"`+c.ran+`","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1000,"completion_tokens":500}}`, true)
		if err := h.srv.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		p, _ := h.srv.prices.Lookup(c.priced)
		if got, want := h.spent(c.user), p.Cost(billing.Usage{Input: 1000, Output: 500}); got != want {
			t.Fatalf("%s: billed %d, want %d (%s)", c.user, got, want, c.priced)
		}
	}
}

// While a request runs, its reservation is renewed past the TTL; once it
// settles, nothing is left to renew.
func TestRunningRequestsKeepTheirReservation(t *testing.T) {
	h := newHarness(t, nil)
	h.srv.cfg.ReservationTTL = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.srv.RenewReservations(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	x := h.open(t)
	x.requestHeaders(authed("x-user-id", "slow")...)
	x.requestBody(`{"model":"gpt-4o-mini","max_tokens":10,"messages":[]}`)
	x.responseHeaders(":status", "200", "content-type", "text/event-stream")
	want := h.budget("slow").Reserved
	for range 5 { // 1 s: more than three TTLs
		time.Sleep(200 * time.Millisecond)
		x.responseChunk("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n", false)
	}
	if got := h.budget("slow").Reserved; got != want || want == 0 {
		t.Fatalf("reserved after three TTLs = %d, want %d", got, want)
	}
	x.responseChunk("data: [DONE]\n\n", true)
	if n := len(h.srv.holds.snapshot()); n != 0 {
		t.Fatalf("%d reservations still renewed after settlement", n)
	}
}

func requestBodyMsg(body string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}}
}
