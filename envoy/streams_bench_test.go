package envoy_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// BenchmarkOpenStreams is `make loadtest-streams`: steps of N concurrent
// slow streams (the fake provider, a process of its own, sends a word every
// 1.5 s for STREAMS_HOLD) through one Envoy and one sidecar with the
// generated configuration's limits. For each step it prints the errors,
// whether every stream was billed exactly, and, once all N are open, the
// resident memory and open files of Envoy and the sidecar, the sidecar's
// goroutines and its streams gauge, per stream above the idle baseline.
// Off unless STREAMS_STEPS is set: it takes minutes and the whole machine.
func BenchmarkOpenStreams(b *testing.B) {
	if os.Getenv("STREAMS_STEPS") == "" {
		b.Skip("run it with `make loadtest-streams`")
	}
	for b.Loop() {
		openStreams(b)
	}
}

type procSample struct{ rssKB, fds int }

func sampleProc(pid int) procSample {
	var p procSample
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				p.rssKB, _ = strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			}
		}
	}
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		p.fds = len(fds)
	}
	return p
}

func openStreams(t testing.TB) {
	var steps []int
	for _, f := range strings.Split(os.Getenv("STREAMS_STEPS"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || n > 20000 {
			t.Fatalf("STREAMS_STEPS: %q", f)
		}
		steps = append(steps, n)
	}
	// Envoy, the sidecar and the fake provider inherit the limit: raise
	// the soft one to the hard one (20,000 here, both).
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Logf("open-file limit stays %d: %v", lim.Cur, err)
		}
	}
	hold := 45 * time.Second
	if d, err := time.ParseDuration(os.Getenv("STREAMS_HOLD")); err == nil && d > 0 {
		hold = min(d, 5*time.Minute)
	}
	const every = 1500 * time.Millisecond
	words := int(hold / every)
	// STREAMS_PROVIDER=h2: the provider over TLS with HTTP/2, as real
	// ones are, so that Envoy holds one file per stream, not two.
	var pki *testinfra.PKI
	proto := "HTTP/1.1"
	if os.Getenv("STREAMS_PROVIDER") == "h2" {
		pki, proto = testinfra.NewPKI(t, ""), "HTTP/2 over TLS"
	}
	fake := testenv.StartFakeProviderTLS(t, pki)
	eo := envoy.Options{}
	if pki != nil {
		eo.CACertFile = pki.CAFile
	}
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "1000000", UpstreamURL: fake.URL, DirectExtProc: true,
		Envoy: eo, Env: []string{"LOG_LEVEL=warn"}})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1, DisableKeepAlives: true}}

	var out strings.Builder
	fmt.Fprintf(&out, "make loadtest-streams, %s, %d cores, a word every %s for %s per stream, %s to the provider\n",
		time.Now().Format("2006-01-02"), runtime.NumCPU(), every, hold, proto)
	tw := tabwriter.NewWriter(&out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\terrors\tbilled exactly\tramp s\tenvoy RSS MB\tKB/stream\tenvoy fds\tsidecar RSS MB\tKB/stream\tsidecar fds\tgoroutines\tper stream\tstreams gauge\t")
	// Per stream is above the idle processes, measured once before the
	// first step (memory a step frees is not all given back to the system,
	// so a later step's own start would understate it).
	baseE, baseS := sampleProc(s.Envoy.PID()), sampleProc(s.Sidecar.PID())
	baseG := metric(t, s, "go_goroutines")
	fmt.Fprintf(&out, "idle: envoy %.0f MB, sidecar %.0f MB, %.0f goroutines\n\n", float64(baseE.rssKB)/1024, float64(baseS.rssKB)/1024, baseG)
	for _, n := range steps {
		user := fmt.Sprintf("streams-%d", n)
		var started, failed atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		begin := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := slowStream(client, s, user, words, every, &started); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("stream %d: %v", i, err))
				}
			}()
			// Open about 400 a second: the ramp stays well inside the hold.
			if i%40 == 39 {
				time.Sleep(100 * time.Millisecond)
			}
		}
		for started.Load()+failed.Load() < int64(n) && time.Since(begin) < hold {
			time.Sleep(100 * time.Millisecond)
		}
		ramp := time.Since(begin)
		e, sc := sampleProc(s.Envoy.PID()), sampleProc(s.Sidecar.PID())
		g, open := metric(t, s, "go_goroutines"), metric(t, s, "aifirewall_streams_open")
		wg.Wait()
		exact := "yes"
		want := int64(n) * (11*miniIn + int64(words)*miniOut)
		deadline := time.Now().Add(30 * time.Second)
		for s.Spent(t, today(user)) != want && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if got := s.Spent(t, today(user)); got != want {
			exact = fmt.Sprintf("no: %d of %d", got, want)
		}
		perKB := func(now, base int) string { return fmt.Sprintf("%.1f", float64(now-base)/float64(n)) }
		fmt.Fprintf(tw, "%d\t%d\t%s\t%.1f\t%.0f\t%s\t%d\t%.0f\t%s\t%d\t%.0f\t%.2f\t%.0f\t\n", n, failed.Load(), exact, ramp.Seconds(),
			float64(e.rssKB)/1024, perKB(e.rssKB, baseE.rssKB), e.fds, float64(sc.rssKB)/1024, perKB(sc.rssKB, baseS.rssKB), sc.fds,
			g, (g-baseG)/float64(n), open)
		if v := firstErr.Load(); v != nil {
			fmt.Fprintf(&out, "  first error at %d streams: %s\n", n, v)
		}
	}
	tw.Flush()
	if p := os.Getenv("STREAMS_OUT"); p != "" {
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(out.String()), 0o644)
	}
	t.Log("\n" + out.String())
}

// slowStream runs one streamed request that the fake provider answers a
// word at a time, and checks every word arrived.
func slowStream(client *http.Client, s *testenv.Stack, user string, words int, every time.Duration, started *atomic.Int64) error {
	req, _ := http.NewRequest("POST", s.Envoy.URL()+"/v1/chat/completions", strings.NewReader(cappedBody))
	req.Header.Set("authorization", "Bearer "+testenv.ClientKey)
	req.Header.Set("content-type", "application/json")
	req.Header.Set("x-user-id", user)
	req.Header.Set("x-fake-words", strconv.Itoa(words))
	req.Header.Set("x-fake-delay-ms", strconv.Itoa(int(every/time.Millisecond)))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	got, first := 0, true
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if strings.Contains(line, `"content":"`) && !strings.Contains(line, `"content":""`) {
			got++
			if first {
				started.Add(1)
				first = false
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if got != words {
		return fmt.Errorf("%d of %d words", got, words)
	}
	return nil
}

func metric(t testing.TB, s *testenv.Stack, name string) float64 {
	v, _ := sidecarMetric(t, s, name)
	return v
}
