package envoy_test

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

// BenchmarkTimeToFirstByte compares the time to the first streamed byte
// through Envoy with the sidecar and through the same Envoy without it,
// to the same fake upstream. It reports p50 and p99 of each and the ratio
// of the medians.
func BenchmarkTimeToFirstByte(b *testing.B) {
	s := testenv.StartStack(b, testenv.StackOptions{DirectExtProc: true, Env: []string{"LOG_LEVEL=info"}}) // as in production
	up := httptest.NewServer(&fakellm.Server{})
	b.Cleanup(up.Close)
	plain := testenv.StartEnvoyWith(b, envoy.Options{UpstreamURL: up.URL, ExtProcAddr: s.Sidecar.GRPCAddr, WithoutFirewall: true})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	ttfb := func(base string) time.Duration {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(seedBody))
		req.Header.Set("authorization", "Bearer "+testenv.ClientKey)
		req.Header.Set("content-type", "application/json")
		req.Header.Set("x-user-id", "bench")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		if _, err := br.ReadByte(); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		br.WriteTo(discard{})
		resp.Body.Close()
		return d
	}
	var with, without []time.Duration
	for b.Loop() {
		with = append(with, ttfb(s.Envoy.URL()))
		without = append(without, ttfb(plain.URL()))
	}
	q := func(ds []time.Duration, p float64) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[int(p*float64(len(ds)-1))]
	}
	b.ReportMetric(float64(q(with, 0.5).Microseconds()), "with-p50-µs")
	b.ReportMetric(float64(q(with, 0.99).Microseconds()), "with-p99-µs")
	b.ReportMetric(float64(q(without, 0.5).Microseconds()), "without-p50-µs")
	b.ReportMetric(float64(q(without, 0.99).Microseconds()), "without-p99-µs")
	b.ReportMetric(float64(q(with, 0.5))/float64(q(without, 0.5)), "ratio-p50")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
