package billing

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkAdmit is one admission (gate + reservation) on a real Redis over
// loopback: what counting the prompt concurrently with it could save at
// most on the request path.
func BenchmarkAdmit(b *testing.B) {
	s := redisStore(b)
	ctx := context.Background()
	var samples []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		if _, err := s.Admit(ctx, Admission{User: "bench", Day: "d", RequestID: fmt.Sprint(i), Amount: 1, Limit: NanosPerUSD, TTL: time.Minute}); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
		// Settled at once, as short requests are: the user holds one
		// reservation at a time.
		if _, err := s.Settle(ctx, Settlement{User: "bench", Day: "d", RequestID: fmt.Sprint(i), Amount: 1}); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(samples[len(samples)*99/100].Microseconds()), "p99-µs")
}
