package billing

import (
	"context"
	"sync"
	"testing"

	"github.com/aifirewall/aifirewall/internal/testenv"
)

// Both stores must honour the Store contract the same way.
func stores(t *testing.T) map[string]Store {
	r := testenv.StartRedis(t)
	rs, err := NewRedisStore(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	return map[string]Store{"redis": rs, "memory": NewMemStore()}
}

func TestStoreSettleIsIdempotent(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			set := Settlement{User: "alice", Day: "2026-11-27", RequestID: "req-1", Amount: 1234}
			for i, want := range []bool{true, false, false} {
				applied, err := s.Settle(ctx, set)
				if err != nil || applied != want {
					t.Fatalf("settle #%d = %v, %v; want %v", i, applied, err, want)
				}
			}
			if _, err := s.Settle(ctx, Settlement{User: "alice", Day: "2026-11-27", RequestID: "req-2", Amount: 66}); err != nil {
				t.Fatal(err)
			}
			got, err := s.Spent(ctx, "alice", "2026-11-27")
			if err != nil || got != 1300 {
				t.Fatalf("spent = %d, %v; want 1300", got, err)
			}
			if other, _ := s.Spent(ctx, "bob", "2026-11-27"); other != 0 {
				t.Fatalf("bob spent %d", other)
			}
		})
	}
}

func TestStoreConcurrentSettlementsAllCount(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			for i := range 50 {
				wg.Go(func() {
					// Each request settled twice, concurrently: billed once.
					for range 2 {
						if _, err := s.Settle(ctx, Settlement{User: "carol", Day: "d", RequestID: string(rune('A' + i)), Amount: 10}); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			if got, _ := s.Spent(ctx, "carol", "d"); got != 500 {
				t.Fatalf("spent = %d, want 500", got)
			}
		})
	}
}

func TestRedisKeyHoldsIntegerNanos(t *testing.T) {
	r := testenv.StartRedis(t)
	s, err := NewRedisStore(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Settle(ctx, Settlement{User: "dave", Day: "2026-11-27", RequestID: "x", Amount: 4200}); err != nil {
		t.Fatal(err)
	}
	v, err := s.rdb.Get(ctx, "budget:{dave}:2026-11-27").Result()
	if err != nil || v != "4200" {
		t.Fatalf("raw key = %q, %v", v, err)
	}
	if ttl := s.rdb.TTL(ctx, "budget:{dave}:2026-11-27").Val(); ttl <= 0 || ttl > keyTTL {
		t.Fatalf("ttl = %v", ttl)
	}
}
