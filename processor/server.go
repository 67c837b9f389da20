// Package processor is the ext_proc server: Envoy opens one gRPC stream per
// HTTP request and the sidecar walks it through the phases in request.go.
package processor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/budgets"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/processor/provider"
	"github.com/aifirewall/aifirewall/providers"
)

// Config is what the processor needs to decide on a request.
type Config struct {
	Auth identity.Authenticator
	// Upstreams are the providers, by name; Envoy's route names the one a
	// request goes to. Empty: Upstream and UpstreamKey are the only one.
	Upstreams   map[string]*Upstream
	Upstream    provider.Kind // the one provider's format
	UpstreamKey string        // its credential, with SendKeys
	// SendKeys puts provider keys in the ext_proc reply. Off, the sidecar
	// holds none and Envoy's credential injector adds them; on only where
	// no proxy in the path can (Istio's every-sidecar variant).
	SendKeys bool
	// Policy says which identities may call which providers and models;
	// nil allows everything.
	Policy       *providers.Policies
	DailyLimit   billing.Nanos // per user per budget day, unless the caller has its own
	Location     *time.Location
	StoreTimeout time.Duration // bound on each budget-store call
	// Settler writes settlements, queueing (and spooling) what the store
	// cannot take; nil: one without a spool file.
	Settler *billing.Settler
	// FailOpen admits requests without a budget check while the store is
	// unreachable (FAIL_MODE=open); their spend is billed when it returns.
	FailOpen bool
	// ReservationTTL bounds how long an admitted request holds its
	// estimated cost when its settlement never comes (a crashed sidecar).
	ReservationTTL time.Duration
	// Cutoff makes the default daily budget, and each budget of the file
	// that does not say otherwise (cutoff), end a stream that would pass
	// it (STREAM_CUTOFF).
	Cutoff bool
	// DefaultOutputTokens estimates the output of a request that sets no
	// max_tokens, for its reservation.
	DefaultOutputTokens int64
	// Budgets are the budgets file's, swapped whole when it changes; nil
	// or empty: the default budget alone.
	Budgets *atomic.Pointer[budgets.File]
	// Ledger, when set, gets a record of each settled request; History
	// reads it for callers' own spend history.
	Ledger  Recorder
	History Reporter
}

// Server implements Envoy's ExternalProcessor service.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer

	cfg     Config
	store   billing.Store
	prices  *billing.Prices
	tk      *billing.Tokenizer
	log     *slog.Logger
	now     func() time.Time
	metrics *Metrics // nil: no metrics
	holds   holds
	open    atomic.Int64 // ext_proc streams in progress

	upstreams map[string]*Upstream
}

// New returns a processor. now may be nil for the wall clock.
func New(cfg Config, store billing.Store, prices *billing.Prices, tk *billing.Tokenizer, log *slog.Logger, now func() time.Time) *Server {
	if now == nil {
		now = time.Now
	}
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = time.Second
	}
	if cfg.Settler == nil {
		cfg.Settler, _ = billing.NewSettler(store, "", 100_000, cfg.StoreTimeout, log)
	}
	if cfg.ReservationTTL <= 0 {
		cfg.ReservationTTL = 15 * time.Minute
	}
	if cfg.DefaultOutputTokens <= 0 {
		cfg.DefaultOutputTokens = 1024
	}
	return &Server{cfg: cfg, store: store, prices: prices, tk: tk, log: log, now: now, upstreams: upstreams(cfg)}
}

// OpenStreams is how many ext_proc streams are in progress: the requests
// Envoy is carrying through this sidecar now.
func (s *Server) OpenStreams() int64 { return s.open.Load() }

// WithMetrics makes the server record m.
func (s *Server) WithMetrics(m *Metrics) *Server {
	s.metrics = m
	return s
}

// Process handles one HTTP request's stream of phases. A panic while
// handling fails this request alone (its stream ends with an error, which
// Envoy turns into a failed request) and never the process.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) (err error) {
	s.metrics.stream(1)
	s.open.Add(1)
	defer func() { s.metrics.stream(-1); s.open.Add(-1) }()
	r := &request{s: s, log: s.log}
	defer func() {
		if !r.guard(r.finish) && err == nil {
			err = errPanic
		}
	}()
	for {
		msg, err := stream.Recv()
		if err != nil {
			// EOF or a cancelled stream: Envoy is done with this request,
			// whether it completed or the client went away.
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		start := time.Now()
		var resp *extprocv3.ProcessingResponse
		var after func()
		if !r.guard(func() { resp, after = r.handle(stream.Context(), msg) }) {
			return errPanic
		}
		s.metrics.observePhase(phaseName(msg), start)
		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		if after != nil && !r.guard(after) {
			return errPanic
		}
	}
}

var errPanic = status.Error(codes.Internal, "the AI firewall failed on this request; it was logged")

// guard runs f; a panic in it is logged and counted, and the request is
// settled at its estimate. It reports whether f returned normally.
func (r *request) guard(f func()) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			r.recovered(p)
			r.settle()
			ok = false
		}
	}()
	f()
	return true
}

func (r *request) recovered(p any) {
	r.panicked = true
	r.s.metrics.panicked()
	r.log.Error("panic while processing a request; this request fails, the sidecar goes on",
		"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
}

// Drain waits until every settlement started has been written or queued
// in the spool, or ctx ends.
func (s *Server) Drain(ctx context.Context) error { return s.cfg.Settler.Flush(ctx) }

func phaseName(msg *extprocv3.ProcessingRequest) string {
	switch msg.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingRequest_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingRequest_ResponseBody:
		return "response_body"
	}
	return "other"
}
