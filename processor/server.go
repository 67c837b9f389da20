// Package processor is the ext_proc server: Envoy opens one gRPC stream per
// HTTP request and the sidecar walks it through the phases in request.go.
package processor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/processor/provider"
)

// Config is what the processor needs to decide on a request.
type Config struct {
	Auth         identity.Authenticator
	Upstream     provider.Kind // which provider the upstream is
	UpstreamKey  string        // the credential sent upstream instead
	DailyLimit   billing.Nanos // per user per budget day, unless the caller has its own
	Location     *time.Location
	StoreTimeout time.Duration // bound on each budget-store call
	SettleTries  int           // attempts to write a settlement
	// ReservationTTL bounds how long an admitted request holds its
	// estimated cost when its settlement never comes (a crashed sidecar).
	ReservationTTL time.Duration
	// DefaultOutputTokens estimates the output of a request that sets no
	// max_tokens, for its reservation.
	DefaultOutputTokens int64
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

	settling sync.WaitGroup
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
	if cfg.SettleTries <= 0 {
		cfg.SettleTries = 3
	}
	if cfg.ReservationTTL <= 0 {
		cfg.ReservationTTL = 15 * time.Minute
	}
	if cfg.DefaultOutputTokens <= 0 {
		cfg.DefaultOutputTokens = 1024
	}
	return &Server{cfg: cfg, store: store, prices: prices, tk: tk, log: log, now: now}
}

// WithMetrics makes the server record m.
func (s *Server) WithMetrics(m *Metrics) *Server {
	s.metrics = m
	return s
}

// Process handles one HTTP request's stream of phases.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	r := &request{s: s, log: s.log}
	defer r.finish()
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
		resp, after := r.handle(stream.Context(), msg)
		s.metrics.observePhase(phaseName(msg), start)
		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		if after != nil {
			after()
		}
	}
}

// settle writes a request's charge in the background, retrying, so the
// Envoy stream is never held up by the store. Drain waits for these.
func (s *Server) settle(set billing.Settlement, log *slog.Logger) {
	s.settling.Go(func() {
		var err error
		for try := range s.cfg.SettleTries {
			if try > 0 {
				time.Sleep(time.Duration(try*try) * 100 * time.Millisecond)
			}
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StoreTimeout)
			var applied bool
			applied, err = s.store.Settle(ctx, set)
			cancel()
			if err != nil {
				s.metrics.storeError("settle")
			}
			if err == nil {
				if !applied {
					log.Info("settlement already applied", "cost_nanos", int64(set.Amount))
				}
				return
			}
		}
		log.Error("settlement lost", "cost_nanos", int64(set.Amount), "user", set.User, "day", set.Day, "err", err)
	})
}

// Drain waits until every settlement started has been written, or ctx ends.
func (s *Server) Drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.settling.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

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
