package processor

import (
	"context"
	"sync"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/loop"
)

// holds are the reservations of the requests this sidecar is running. A
// reservation must live as long as its request: a stream can outlast any
// fixed TTL (long reasoning, very long outputs), and one whose reservation
// expired would let spend run past the limit. They are renewed together,
// so only a dead sidecar's reservations ever expire.
type holds struct {
	mu sync.Mutex
	m  map[*request][]billing.Hold // a request's default budget and its budgets' counters
}

func (h *holds) add(r *request, hs []billing.Hold) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[*request][]billing.Hold{}
	}
	h.m[r] = hs
}

func (h *holds) remove(r *request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, r)
}

func (h *holds) snapshot() []billing.Hold {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]billing.Hold, 0, len(h.m))
	for _, hs := range h.m {
		out = append(out, hs...)
	}
	return out
}

// RenewReservations renews the reservations of running requests every
// third of RESERVATION_TTL until ctx ends, so a renewal can fail twice
// before a live request's reservation lapses.
func (s *Server) RenewReservations(ctx context.Context) {
	loop.Every(ctx, s.cfg.ReservationTTL/3, func() { s.renew(ctx) })
}

func (s *Server) renew(ctx context.Context) {
	hs := s.holds.snapshot()
	if len(hs) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	if err := s.store.Renew(rctx, hs, s.cfg.ReservationTTL); err != nil {
		s.metrics.storeError("renew")
		s.log.Warn("reservations not renewed; retrying at the next tick", "open", len(hs), "err", err)
	}
}
