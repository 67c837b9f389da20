package billing

import (
	"context"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// A rolling window's spend is the sum of its buckets; its reservations
// live apart from them, so one made in an earlier bucket still counts, and
// a settlement goes to the bucket it names. The same on Redis, a Redis
// Cluster (every key of a counter in one slot) and in memory.
func TestRollingWindowBuckets(t *testing.T) {
	ctx := context.Background()
	all := stores(t)
	cl, err := NewRedisStore(testinfra.StartRedisCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	all["cluster"] = cl
	for name, s := range all {
		t.Run(name, func(t *testing.T) {
			const counter, day = "budget=team-24h", "rolling-24h"
			window := []string{"2026-12-01T13", "2026-12-01T12", "2026-11-30T13"}
			for i, b := range []string{"2026-12-01T12", "2026-11-30T13", "2026-11-30T12"} { // the last one is out of the window
				if _, err := s.Settle(ctx, Settlement{User: counter, Day: day, Bucket: b, RequestID: "old" + b, Amount: Nanos(100 * (i + 1))}); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.Window(ctx, counter, day, window, 1000)
			if err != nil || got.Spent != 300 {
				t.Fatalf("window spend %+v %v, want 300 (100 + 200; 300 aged out)", got, err)
			}
			// Reserved in the earlier bucket, still counted from the next.
			b, err := s.Admit(ctx, Admission{User: counter, Day: day, Buckets: window[1:], RequestID: "long", Amount: 600, Limit: 1000, TTL: time.Minute})
			if err != nil || !b.Admitted {
				t.Fatalf("admit: %+v %v", b, err)
			}
			if b, err := s.Admit(ctx, Admission{User: counter, Day: day, Buckets: window, RequestID: "next", Amount: 10, Limit: 900, TTL: time.Minute}); err != nil || b.Admitted || b.Reserved != 600 {
				t.Fatalf("with 300 spent and 600 held, a 900 limit admitted: %+v %v", b, err)
			}
			if _, err := s.Settle(ctx, Settlement{User: counter, Day: day, Bucket: window[0], RequestID: "long", Amount: 50}); err != nil {
				t.Fatal(err)
			}
			if got, _ := s.Window(ctx, counter, day, window, 1000); got.Spent != 350 || got.Reserved != 0 {
				t.Fatalf("after settling: %+v, want 350 spent, none held", got)
			}
		})
	}
}

// A key's record keeps its groups, and records of the older form (no
// groups) still read.
func TestKeyRecords(t *testing.T) {
	for _, k := range []APIKey{{User: "alice", Limit: 5}, {User: "bob\tx", Limit: 0, Groups: []string{"payments", "eng"}}} {
		got, ok := decodeKey(encodeKey(k))
		if !ok || got.User != k.User || got.Limit != k.Limit || len(got.Groups) != len(k.Groups) {
			t.Fatalf("%+v came back as %+v (%v)", k, got, ok)
		}
	}
	if got, ok := decodeKey("2500000000\tcarol"); !ok || got.User != "carol" || got.Limit != 2_500_000_000 {
		t.Fatalf("an older record: %+v %v", got, ok)
	}
}
