package envoy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

// soakSettings reads SOAK_CLIENTS and SOAK_DURATION; the defaults are the
// short run CI does. `make soak` runs a longer one.
func soakSettings(t *testing.T) (int, time.Duration) {
	clients, dur := 8, 15*time.Second
	if v, err := strconv.Atoi(os.Getenv("SOAK_CLIENTS")); err == nil && v > 0 {
		clients = v
	}
	if v, err := time.ParseDuration(os.Getenv("SOAK_DURATION")); err == nil && v > 0 {
		dur = v
	}
	return clients, dur
}

// sidecarGauge reads one unlabelled series from the sidecar's /metrics.
func sidecarGauge(t *testing.T, s *testenv.Stack, name string) float64 {
	t.Helper()
	v, ok := sidecarMetric(t, s, name)
	if !ok {
		t.Fatalf("%s not in /metrics", name)
	}
	return v
}

// sidecarMetric reads one series (its name and labels as /metrics writes
// them) from the sidecar's /metrics, and whether it is there.
func sidecarMetric(t testing.TB, s *testenv.Stack, series string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + s.Sidecar.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f, true
		}
	}
	return 0, false
}

// TestSoak: concurrent streaming clients through Envoy and the sidecar to
// the fake upstream, each with a budget that runs out partway (the last
// stream a budget admits is cut off at it). Billed spend must equal what
// the answered streams cost plus what reached the client of the cut ones,
// no reservation may stay open, and the sidecar's goroutines and heap must
// not grow.
func TestSoak(t *testing.T) {
	clients, dur := soakSettings(t)
	// A stream takes about 100 ms here: each user can afford about 4
	// requests per second of the run, so budgets run out partway.
	perUser := max(10, int(dur.Seconds()*4))
	s := testenv.StartStack(t, testenv.StackOptions{Limit: billing.Nanos(perUser * reqCost).Decimal()})
	warm := post(t, s, "/v1/chat/completions", testenv.ClientKey, cappedBody, map[string]string{"x-user-id": "warmup"})
	io.Copy(io.Discard, warm.Body)
	time.Sleep(500 * time.Millisecond)
	g0, h0 := sidecarGauge(t, s, "go_goroutines"), sidecarGauge(t, s, "go_memstats_heap_inuse_bytes")

	tk, err := billing.NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	type tally struct {
		ok, overBudget, cut int
		cutCost             int64 // of the cut streams: their prompt and what passed
		errs                map[string]int
	}
	results := make([]tally, clients)
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	client := &http.Client{Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			res := &results[c]
			res.errs = map[string]int{}
			for ctx.Err() == nil {
				req, _ := http.NewRequest("POST", s.Envoy.URL()+"/v1/chat/completions", strings.NewReader(cappedBody))
				req.Header.Set("authorization", "Bearer "+testenv.ClientKey)
				req.Header.Set("content-type", "application/json")
				req.Header.Set("x-user-id", fmt.Sprint("soak-", c))
				req.Header.Set("x-fake-split", "7")
				req.Header.Set("x-fake-delay-ms", "5")
				resp, err := client.Do(req)
				if err != nil {
					res.errs["transport: "+err.Error()]++
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200 && strings.Contains(string(body), `"code":"budget_exceeded"`):
					// Cut off: the error event, then a reset (a read error)
					// unless the cut came with the last chunk.
					res.cut++
					res.cutCost += 9*miniIn + int64(tk.Count("gpt-4o-mini", streamedText(string(body))))*miniOut
				case err != nil:
					res.errs["read: "+err.Error()]++
				case resp.StatusCode == 200 && strings.HasSuffix(string(body), "data: [DONE]\n\n"):
					res.ok++
				case resp.StatusCode == 402:
					res.overBudget++
					time.Sleep(50 * time.Millisecond) // a real client would wait for the reset
				default:
					res.errs[fmt.Sprintf("status %d", resp.StatusCode)]++
				}
			}
		})
	}
	wg.Wait()

	var ok, over, cut, failed int
	errs := map[string]int{}
	for _, r := range results {
		ok, over, cut = ok+r.ok, over+r.overBudget, cut+r.cut
		for k, v := range r.errs {
			errs[k] += v
			failed += v
		}
	}
	// Let settlements land, then compare every user's bill with its streams.
	time.Sleep(time.Second)
	var billed, expected, reserved int64
	mismatches := 0
	for c, r := range results {
		user := fmt.Sprint("soak-", c)
		_, b := getBudget(t, s, testenv.ClientKey, map[string]string{"x-user-id": user})
		billed, reserved = billed+b.SpentNanos, reserved+b.ReservedNanos
		expected += int64(r.ok)*reqCost + r.cutCost
		if b.SpentNanos != int64(r.ok)*reqCost+r.cutCost {
			mismatches++
		}
	}
	time.Sleep(time.Second)
	g1, h1 := sidecarGauge(t, s, "go_goroutines"), sidecarGauge(t, s, "go_memstats_heap_inuse_bytes")

	kinds := make([]string, 0, len(errs))
	for k, v := range errs {
		kinds = append(kinds, fmt.Sprintf("%s ×%d", k, v))
	}
	sort.Strings(kinds)
	t.Logf("soak: %d clients for %s", clients, dur)
	t.Logf("requests: %d (answered %d, cut off at the budget %d, over budget %d, errors %d)", ok+cut+over+failed, ok, cut, over, failed)
	t.Logf("errors by kind: %v", kinds)
	t.Logf("billed %s, expected %s (%d users off), reserved at end %s",
		billing.Nanos(billed), billing.Nanos(expected), mismatches, billing.Nanos(reserved))
	t.Logf("sidecar goroutines %v → %v, heap in use %.1f MiB → %.1f MiB", g0, g1, h0/(1<<20), h1/(1<<20))

	if len(errs) > 0 {
		t.Errorf("errors: %v", kinds)
	}
	if billed != expected || mismatches > 0 {
		t.Errorf("billed %d, expected %d", billed, expected)
	}
	if reserved != 0 {
		t.Errorf("reserved at end = %d", reserved)
	}
	if over == 0 || ok == 0 {
		t.Errorf("the budget should run out partway: answered %d, refused %d", ok, over)
	}
	if g1 > g0+10 {
		t.Errorf("goroutines grew from %v to %v", g0, g1)
	}
	if h1 > 2*h0+32<<20 {
		t.Errorf("heap grew from %.0f to %.0f bytes", h0, h1)
	}
}

// streamedText is the content of a chat stream's deltas.
func streamedText(body string) string {
	var text strings.Builder
	for _, line := range strings.Split(body, "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Choices []struct {
				Delta struct{ Content string }
			}
		}
		if json.Unmarshal([]byte(data), &ev) == nil {
			for _, c := range ev.Choices {
				text.WriteString(c.Delta.Content)
			}
		}
	}
	return text.String()
}
