package billing

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkAdmit is one admission (gate + reservation) on a real Redis over
// loopback, with the user holding one or 10,000 other open reservations:
// what counting the prompt concurrently with it could save at most on the
// request path, and whether a check grows with open reservations.
func BenchmarkAdmit(b *testing.B) {
	for _, open := range []int{0, 10_000} {
		b.Run(fmt.Sprintf("open=%d", open), func(b *testing.B) {
			s := redisStore(b)
			ctx := context.Background()
			for i := range open {
				if _, err := s.Admit(ctx, Admission{User: "bench", Day: "d", RequestID: fmt.Sprint("held-", i), Amount: 1, Limit: NanosPerUSD, TTL: time.Hour}); err != nil {
					b.Fatal(err)
				}
			}
			var samples []time.Duration
			for i := 0; b.Loop(); i++ {
				start := time.Now()
				if _, err := s.Admit(ctx, Admission{User: "bench", Day: "d", RequestID: fmt.Sprint(i), Amount: 1, Limit: NanosPerUSD, TTL: time.Minute}); err != nil {
					b.Fatal(err)
				}
				samples = append(samples, time.Since(start))
				if _, err := s.Settle(ctx, Settlement{User: "bench", Day: "d", RequestID: fmt.Sprint(i), Amount: 1}); err != nil {
					b.Fatal(err)
				}
			}
			slices.Sort(samples)
			b.ReportMetric(float64(samples[len(samples)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(samples[len(samples)*99/100].Microseconds()), "p99-µs")
		})
	}
}
