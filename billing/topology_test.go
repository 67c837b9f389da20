package billing

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// The scripts touch only one user's keys, which share a hash slot: they
// must run on a real Redis Cluster, for users spread over all masters.
func TestRedisClusterStore(t *testing.T) {
	s, err := NewRedisStore(testinfra.StartRedisCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := range 20 {
		user := fmt.Sprintf("user-%d", i)
		b, err := s.Admit(ctx, Admission{User: user, Day: "d", RequestID: "r", Amount: 500, Limit: 1000, TTL: time.Minute})
		if err != nil || !b.Admitted {
			t.Fatalf("%s admit: %+v %v", user, b, err)
		}
		if _, err := s.Settle(ctx, Settlement{User: user, Day: "d", RequestID: "r", Amount: 300}); err != nil {
			t.Fatalf("%s settle: %v", user, err)
		}
		if err := s.SetLimit(ctx, user, 2000); err != nil {
			t.Fatal(err)
		}
		b, err = s.Budget(ctx, user, "d", 1000)
		if err != nil || b.Spent != 300 || b.Reserved != 0 || b.Limit != 2000 {
			t.Fatalf("%s budget: %+v %v", user, b, err)
		}
	}
	users, err := s.Users(ctx, "d")
	if err != nil || len(users) != 20 {
		t.Fatalf("users: %d %v", len(users), err)
	}
	if err := s.AddKey(ctx, fmt.Sprintf("%064x", 1), APIKey{User: "user-1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeKey(ctx, fmt.Sprintf("%064x", 2)); err != nil {
		t.Fatal(err)
	}
	if added, revoked, err := s.Keys(ctx); err != nil || len(added) != 1 || len(revoked) != 1 {
		t.Fatalf("keys: %v %v %v", added, revoked, err)
	}
}

// exercise runs one user's admission, settlement and read against s.
func exercise(t *testing.T, s *RedisStore) {
	t.Helper()
	ctx := context.Background()
	if b, err := s.Admit(ctx, Admission{User: "u", Day: "d", RequestID: "r", Amount: 10, Limit: 100, TTL: time.Minute}); err != nil || !b.Admitted {
		t.Fatalf("admit: %+v %v", b, err)
	}
	// Renewals of several users' reservations go out in one pipeline,
	// across slots on a Cluster.
	if err := s.Renew(ctx, []Hold{{"u", "d", "r"}, {"v", "d", "x"}, {"w", "e", "y"}}, time.Minute); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if _, err := s.Settle(ctx, Settlement{User: "u", Day: "d", RequestID: "r", Amount: 7}); err != nil {
		t.Fatal(err)
	}
	if b, err := s.Budget(ctx, "u", "d", 100); err != nil || b.Spent != 7 || b.Reserved != 0 {
		t.Fatalf("budget: %+v %v", b, err)
	}
}

// rediss:// to a Redis whose certificate a private CA signed (REDIS_CA_FILE).
func TestRedisTLSStore(t *testing.T) {
	p := testinfra.NewPKI(t, "")
	url := testinfra.StartRedisTLS(t, p)
	if s, err := NewRedisStore(url); err == nil {
		if err := s.Ping(context.Background()); err == nil {
			t.Fatal("a certificate from an unknown CA was accepted")
		}
		s.Close()
	}
	s, err := NewRedisStore(url, WithCAFile(p.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	exercise(t, s)
}

// redis+sentinel:// finds the master through a real Sentinel.
func TestRedisSentinelStore(t *testing.T) {
	s, err := NewRedisStore(testinfra.StartRedisSentinel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	exercise(t, s)
}

// With replica acknowledgement, a settlement the primary took but no
// replica holds is an error (queued and retried by the settler), and the
// retry, once the replica is back, neither doubles nor drops it: the
// bill is the same on the primary and the replica.
func TestSettlementWaitsForAReplica(t *testing.T) {
	sen := testinfra.StartSentinel(t, time.Hour) // no failover here
	s, err := NewRedisStore(sen.URL, WithReplicaAck(1, 300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if applied, err := s.Settle(ctx, Settlement{User: "u", Day: "d", RequestID: "r1", Amount: 100}); err != nil || !applied {
		t.Fatalf("settle with the replica up: %v %v", applied, err)
	}
	// A replica that stops reading: what the primary writes stays its own.
	if err := syscall.Kill(sen.Replica.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			syscall.Kill(sen.Replica.PID(), syscall.SIGCONT)
		}
	}()
	if _, err := s.Settle(ctx, Settlement{User: "u", Day: "d", RequestID: "r2", Amount: 20}); err == nil {
		t.Fatal("a settlement no replica holds counted as written")
	}
	syscall.Kill(sen.Replica.PID(), syscall.SIGCONT)
	stopped = false
	applied, err := s.Settle(ctx, Settlement{User: "u", Day: "d", RequestID: "r2", Amount: 20})
	if err != nil || applied {
		t.Fatalf("retry: applied %v, %v (want already applied, no error)", applied, err)
	}
	replica, err := NewRedisStore(sen.Replica.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	for _, st := range []*RedisStore{s, replica} {
		v, err := st.rdb.Get(ctx, BudgetKey("u", "d")).Int64()
		if err != nil || v != 120 {
			t.Fatalf("spent %d (%v), want 120 on the primary and the replica", v, err)
		}
	}
}
