package billing

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// Both stores must honour the Store contract the same way.
func stores(t *testing.T) map[string]Store {
	r := testinfra.StartRedis(t)
	rs, err := NewRedisStore(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	return map[string]Store{"redis": rs, "memory": NewMemStore()}
}

func spent(t *testing.T, s Store, user, day string) Nanos {
	t.Helper()
	b, err := s.Budget(context.Background(), user, day, NanosPerUSD)
	if err != nil {
		t.Fatal(err)
	}
	return b.Spent
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
			if got := spent(t, s, "alice", "2026-11-27"); got != 1300 {
				t.Fatalf("spent = %d; want 1300", got)
			}
			if other := spent(t, s, "bob", "2026-11-27"); other != 0 {
				t.Fatalf("bob spent %d", other)
			}
		})
	}
}

func TestStoreReservationLifecycle(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			adm := Admission{User: "u", Day: "d", RequestID: "r1", Amount: 600, Limit: 1000, TTL: time.Minute}
			b, err := s.Admit(ctx, adm)
			if err != nil || !b.Admitted || b.Reserved != 600 || b.Spent != 0 || b.Limit != 1000 {
				t.Fatalf("admit r1 = %+v, %v", b, err)
			}
			// 600 reserved < 1000: admitted, though it will not fit whole.
			adm.RequestID = "r2"
			if b, _ = s.Admit(ctx, adm); !b.Admitted || b.Reserved != 1200 || b.Remaining() != 0 {
				t.Fatalf("admit r2 = %+v", b)
			}
			adm.RequestID = "r3"
			if b, _ = s.Admit(ctx, adm); b.Admitted {
				t.Fatalf("admit r3 with 1200 reserved of 1000 = %+v", b)
			}
			// Settlement replaces the reservation by the actual cost.
			s.Settle(ctx, Settlement{User: "u", Day: "d", RequestID: "r1", Amount: 100})
			s.Settle(ctx, Settlement{User: "u", Day: "d", RequestID: "r2", Amount: 150})
			if b, _ = s.Budget(ctx, "u", "d", 1000); b.Spent != 250 || b.Reserved != 0 {
				t.Fatalf("after settling = %+v", b)
			}
			// An operator limit replaces the one the caller passes.
			s.SetLimit(ctx, "u", 200)
			if b, _ = s.Admit(ctx, adm); b.Admitted || b.Limit != 200 {
				t.Fatalf("admit under a 200 override = %+v", b)
			}
			s.SetLimit(ctx, "u", 0)
			if b, _ = s.Admit(ctx, adm); !b.Admitted || b.Limit != 1000 {
				t.Fatalf("admit after clearing the override = %+v", b)
			}
		})
	}
}

func TestStoreReservationsExpire(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			adm := Admission{User: "crash", Day: "d", RequestID: "lost", Amount: 1000, Limit: 1000, TTL: 300 * time.Millisecond}
			if b, _ := s.Admit(ctx, adm); !b.Admitted {
				t.Fatal("first admission refused")
			}
			adm.RequestID = "next"
			if b, _ := s.Admit(ctx, adm); b.Admitted {
				t.Fatal("admitted while the first reservation holds the whole budget")
			}
			time.Sleep(400 * time.Millisecond)
			b, err := s.Admit(ctx, adm)
			if err != nil || !b.Admitted || b.Reserved != 1000 {
				t.Fatalf("after expiry = %+v, %v", b, err)
			}
		})
	}
}

// Concurrent admissions for one user never reserve past the limit by more
// than one request's amount.
func TestStoreConcurrentAdmissions(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			var admitted atomic.Int64
			var wg sync.WaitGroup
			for i := range 100 {
				wg.Go(func() {
					b, err := s.Admit(ctx, Admission{User: "carol", Day: "d", RequestID: fmt.Sprint(i), Amount: 70, Limit: 1000, TTL: time.Minute})
					if err != nil {
						t.Error(err)
					}
					if b.Admitted {
						admitted.Add(1)
					}
				})
			}
			wg.Wait()
			// ceil(1000/70) = 15 admissions fit under the rule spent+reserved < limit.
			if n := admitted.Load(); n != 15 {
				t.Fatalf("%d admitted, want 15", n)
			}
		})
	}
}

// redisStore is a RedisStore on a fresh redis-server.
func redisStore(t testing.TB) *RedisStore {
	r := testinfra.StartRedis(t)
	s, err := NewRedisStore(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRedisKeysAreIntegersInOneSlot(t *testing.T) {
	s := redisStore(t)
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
	for _, k := range []string{reservedKey("dave", "d"), expiryKey("dave", "d"), limitKey("dave"), settledKey("dave", "x"), reservedSumKey("dave", "d")} {
		if slot(k) != slot(BudgetKey("dave", "d")) {
			t.Fatalf("%s is not in dave's slot", k)
		}
	}
}

// slot is the part of a key Redis Cluster hashes.
func slot(k string) string {
	i := 0
	for i < len(k) && k[i] != '{' {
		i++
	}
	j := i
	for j < len(k) && k[j] != '}' {
		j++
	}
	return k[i:j]
}

func TestRedisURLForms(t *testing.T) {
	for _, u := range []string{"redis://localhost:6379/0", "rediss://u:p@h:6380/1",
		"redis+sentinel://h:26379?master_name=mymaster&addr=h2:26379", "redis+cluster://h:7000?addr=h:7001"} {
		s, err := NewRedisStore(u)
		if err != nil {
			t.Errorf("%s: %v", u, err)
			continue
		}
		s.Close()
	}
	for _, u := range []string{"http://h", "redis+mystery://h", "nonsense"} {
		if _, err := NewRedisStore(u); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
	if got := redactURL("redis://user:secret@h:1/0"); got != "redis://***@h:1/0" {
		t.Errorf("redact = %s", got)
	}
}

// A renewed reservation outlives its TTL; a settled one is not renewed
// back into existence.
func TestStoreRenewKeepsRunningRequestsReserved(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ttl := 400 * time.Millisecond
			adm := Admission{User: "long", Day: "d", RequestID: "stream", Amount: 1000, Limit: 1000, TTL: ttl}
			if b, _ := s.Admit(ctx, adm); !b.Admitted {
				t.Fatal("first admission refused")
			}
			if _, err := s.Admit(ctx, Admission{User: "long", Day: "d", RequestID: "done", Amount: 0, Limit: 1 << 40, TTL: ttl}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Settle(ctx, Settlement{User: "long", Day: "d", RequestID: "done", Amount: 5}); err != nil {
				t.Fatal(err)
			}
			for range 4 { // 4 × 200 ms: twice the TTL
				time.Sleep(ttl / 2)
				if err := s.Renew(ctx, []Hold{{"long", "d", "stream"}, {"long", "d", "done"}}, ttl); err != nil {
					t.Fatal(err)
				}
			}
			b, err := s.Admit(ctx, Admission{User: "long", Day: "d", RequestID: "next", Amount: 1, Limit: 1000, TTL: ttl})
			if err != nil || b.Admitted || b.Reserved != 1000 || b.Spent != 5 {
				t.Fatalf("after 2 TTLs of renewals = %+v, %v; want the stream still reserved, nothing else", b, err)
			}
			time.Sleep(ttl + 100*time.Millisecond) // renewals stop: it expires
			if b, err := s.Admit(ctx, Admission{User: "long", Day: "d", RequestID: "next", Amount: 1, Limit: 1000, TTL: ttl}); err != nil || !b.Admitted {
				t.Fatalf("after renewals stopped = %+v, %v", b, err)
			}
		})
	}
}

// 100,000 expired reservations (past Lua's unpack limit) are purged in
// batches: the budget check keeps working.
func TestRedisPurgesManyExpiredReservations(t *testing.T) {
	s := redisStore(t)
	ctx := context.Background()
	const n = 100_000
	for i := 0; i < n; i += 5000 {
		pipe := s.rdb.Pipeline()
		for j := i; j < i+5000; j++ {
			id := fmt.Sprintf("gone-%d", j)
			pipe.HSet(ctx, reservedKey("many", "d"), id, 10)
			pipe.ZAdd(ctx, expiryKey("many", "d"), redisZ(1, id))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Over budget already: the check must say so, not fail.
	if _, err := s.Settle(ctx, Settlement{User: "many", Day: "d", RequestID: "big", Amount: 2000}); err != nil {
		t.Fatal(err)
	}
	b, err := s.Budget(ctx, "many", "d", 1000)
	if err != nil || b.Reserved != 0 || b.Spent != 2000 {
		t.Fatalf("budget with %d expired reservations = %+v, %v", n, b, err)
	}
	if left, _ := s.rdb.HLen(ctx, reservedKey("many", "d")).Result(); left != 0 {
		t.Fatalf("%d expired reservations left", left)
	}
	b, err = s.Admit(ctx, Admission{User: "many", Day: "d", RequestID: "x", Amount: 1, Limit: 1000, TTL: time.Minute})
	if err != nil || b.Admitted {
		t.Fatalf("admission over budget = %+v, %v", b, err)
	}
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }

// go-redis's own messages go to the structured log at debug level, not as
// raw lines on stderr before the sidecar's one-line explanation.
func TestRedisClientLogsAreStructured(t *testing.T) {
	var buf bytes.Buffer
	LogRedisTo(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer LogRedisTo(slog.New(slog.NewTextHandler(io.Discard, nil)))
	s, err := NewRedisStore(fmt.Sprintf("redis://127.0.0.1:%d/0", testinfra.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if s.Ping(ctx) == nil {
		t.Fatal("ping of a closed port succeeded")
	}
	if !strings.Contains(buf.String(), `"level":"DEBUG"`) || !strings.Contains(buf.String(), `"component":"go-redis"`) {
		t.Fatalf("go-redis logged %q", buf.String())
	}
}

// The total kept beside the reservations always equals their sum, through
// admissions, settlements, expiries and a day written before the total
// existed; so a check no longer reads every open reservation.
func TestRedisReservedTotalMatchesReservations(t *testing.T) {
	s := redisStore(t)
	ctx := context.Background()
	sum := func() int64 {
		var n int64
		for _, v := range s.rdb.HVals(ctx, reservedKey("tot", "d")).Val() {
			x, _ := strconv.ParseInt(v, 10, 64)
			n += x
		}
		return n
	}
	check := func(step string) {
		t.Helper()
		b, err := s.Budget(ctx, "tot", "d", 1<<40)
		if err != nil || int64(b.Reserved) != sum() {
			t.Fatalf("%s: reserved %d, open reservations sum to %d (%v)", step, b.Reserved, sum(), err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		id := fmt.Sprint(i)
		ttl := time.Minute
		if rng.IntN(4) == 0 {
			ttl = 50 * time.Millisecond // some expire
		}
		if _, err := s.Admit(ctx, Admission{User: "tot", Day: "d", RequestID: id, Amount: Nanos(1 + rng.IntN(1000)), Limit: 1 << 40, TTL: ttl}); err != nil {
			t.Fatal(err)
		}
		if rng.IntN(2) == 0 {
			if _, err := s.Settle(ctx, Settlement{User: "tot", Day: "d", RequestID: fmt.Sprint(rng.IntN(i + 1)), Amount: 1}); err != nil {
				t.Fatal(err)
			}
		}
		if i%50 == 0 {
			time.Sleep(60 * time.Millisecond)
		}
	}
	check("after a mixed run")
	time.Sleep(60 * time.Millisecond)
	check("after expiries")
	// A day from before the total: reservations in the hash, no total.
	s.rdb.Del(ctx, reservedSumKey("tot", "d"))
	check("without the total")
	if _, err := s.Settle(ctx, Settlement{User: "tot", Day: "d", RequestID: "x", Amount: 1}); err != nil {
		t.Fatal(err)
	}
	check("after a settlement")
}

// A reservation with a ceiling takes half of what is free, up to the
// ceiling and at least the amount; the rooms of concurrent admissions sum
// to no more than what was free.
func TestStoreCeilingReservesHalfOfWhatIsFree(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			adm := func(id string, amount, ceiling Nanos) Budget {
				b, err := s.Admit(ctx, Admission{User: "dave", Day: "d", RequestID: id, Amount: amount, Ceiling: ceiling, Limit: 1000, TTL: time.Minute})
				if err != nil || !b.Admitted {
					t.Fatalf("%s: %+v %v", id, b, err)
				}
				return b
			}
			for _, c := range []struct {
				id              string
				amount, ceiling Nanos
				held, room      Nanos
			}{
				{"a", 10, 2000, 500, 500}, // half of 1000
				{"b", 10, 100, 100, 100},  // the ceiling
				{"c", 10, 0, 10, 10},      // no ceiling: the amount
				{"d", 300, 900, 300, 300}, // half of 390 is less than the amount
				{"e", 10, 900, 45, 45},    // half of 90
				{"f", 100, 900, 100, 45},  // 45 free: reserved 100, room 45
			} {
				b := adm(c.id, c.amount, c.ceiling)
				if b.Held != c.held || b.Room() != c.room {
					t.Errorf("%s: held %d room %d, want %d and %d", c.id, b.Held, b.Room(), c.held, c.room)
				}
			}
			if b := adm("a", 10, 2000); b.Held != 500 { // admitted again: the same reservation
				t.Errorf("a again: held %d", b.Held)
			}

			// Concurrent: the rooms never sum past the limit.
			var rooms atomic.Int64
			var wg sync.WaitGroup
			for i := range 50 {
				wg.Go(func() {
					b, err := s.Admit(ctx, Admission{User: "erin", Day: "d", RequestID: fmt.Sprint(i), Amount: 1, Ceiling: 1 << 40, Limit: 1_000_000, TTL: time.Minute})
					if err != nil {
						t.Error(err)
					}
					if b.Admitted {
						rooms.Add(int64(b.Room()))
					}
				})
			}
			wg.Wait()
			if r := rooms.Load(); r > 1_000_000 || r < 999_000 {
				t.Fatalf("the rooms sum to %d of 1,000,000", r)
			}
		})
	}
}
