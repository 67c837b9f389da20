package envoy_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/loadgen"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

// BenchmarkLoadTest is `make loadtest`: the same streaming load, in one run,
// against (a) the fake upstream directly, (b) Envoy alone with the
// generated configuration minus the ext_proc filter, and (c) Envoy with
// the sidecar and Redis ((d): over a Unix socket; (e): the same filter
// against a pass-through ext_proc server, whose CPU is in the sidecar
// column; (f): (c) with the ledger on, SQLite in the sidecar's process;
// (g): (c) without the stream cut-off), printing one table with the
// ratios (c)/(b), (f)/(c) and (c)/(g). It
// measures and prints, once (-benchtime 1x); it fails only when requests
// fail. Off unless LOADTEST=1, so that `make bench` stays short: it takes
// minutes and the whole machine.
func BenchmarkLoadTest(b *testing.B) {
	if os.Getenv("LOADTEST") == "" {
		b.Skip("run it with `make loadtest`")
	}
	for b.Loop() {
		loadTest(b)
	}
}

func loadTest(t testing.TB) {
	dur := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("LOADTEST_DURATION")); err == nil && d > 0 {
		dur = min(d, time.Minute)
	}
	agent, err := os.ReadFile(filepath.Join("..", "processor", "provider", "testdata", "agent_request.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The upstream answers 20 words and keeps no record of what it got.
	upstream := &fakellm.Server{NoRecord: true}
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "1000000", Upstream: upstream, DirectExtProc: true,
		Env: []string{"LOG_LEVEL=warn", "DEFAULT_OUTPUT_TOKENS=64"}})
	// (b) and (e) put the provider's key on as (c) does: only ext_proc differs.
	key := "UPSTREAM_API_KEY=" + testenv.UpstreamKey
	plain := testenv.StartEnvoyWith(t, envoy.Options{UpstreamURL: s.UpstreamURL, ExtProcAddr: s.Sidecar.GRPCAddr, WithoutFirewall: true,
		UpstreamKeyEnv: "UPSTREAM_API_KEY"}, key)
	direct := httptest.NewServer(upstream)
	defer direct.Close()
	uds := testenv.StartStack(t, testenv.StackOptions{Limit: "1000000", Upstream: upstream, DirectExtProc: true, UnixSocket: true,
		Env: []string{"LOG_LEVEL=warn", "DEFAULT_OUTPUT_TOKENS=64"}})
	ledgered := testenv.StartStack(t, testenv.StackOptions{Limit: "1000000", Upstream: upstream, DirectExtProc: true,
		Env: []string{"LOG_LEVEL=warn", "DEFAULT_OUTPUT_TOKENS=64", "LEDGER_URL=sqlite://" + filepath.Join(t.TempDir(), "ledger.db")}})
	uncut := testenv.StartStack(t, testenv.StackOptions{Limit: "1000000", Upstream: upstream, DirectExtProc: true,
		Env: []string{"LOG_LEVEL=warn", "DEFAULT_OUTPUT_TOKENS=64", "STREAM_CUTOFF=false"}})
	// The same filter against a server that changes nothing: the ext_proc
	// protocol's own cost, the floor under (c).
	pass := testenv.StartPassthrough(t)
	floor := testenv.StartEnvoyWith(t, envoy.Options{UpstreamURL: s.UpstreamURL, ExtProcAddr: pass.Addr, UpstreamKeyEnv: "UPSTREAM_API_KEY"}, key)

	type target struct {
		name string
		url  string
		pids map[string]int
	}
	targets := []target{
		// (g) and (f) right after (c): compared with it, they share its moment.
		{"(a) upstream", direct.URL, nil},
		{"(b) envoy", plain.URL(), map[string]int{"envoy": plain.PID()}},
		{"(c) envoy+firewall", s.Envoy.URL(), map[string]int{"envoy": s.Envoy.PID(), "sidecar": s.Sidecar.PID(), "redis": s.Redis.PID()}},
		{"(g) (c) without the cut-off", uncut.Envoy.URL(), map[string]int{"envoy": uncut.Envoy.PID(), "sidecar": uncut.Sidecar.PID(), "redis": uncut.Redis.PID()}},
		{"(f) (c) with the ledger", ledgered.Envoy.URL(), map[string]int{"envoy": ledgered.Envoy.PID(), "sidecar": ledgered.Sidecar.PID(), "redis": ledgered.Redis.PID()}},
		{"(d) same, ext_proc on UDS", uds.Envoy.URL(), map[string]int{"envoy": uds.Envoy.PID(), "sidecar": uds.Sidecar.PID(), "redis": uds.Redis.PID()}},
		{"(e) envoy+pass-through ext_proc", floor.URL(), map[string]int{"envoy": floor.PID(), "sidecar": pass.PID()}},
	}
	scenarios := []struct {
		name  string
		c, kb int
		agent bool
	}{{"1 KB, c=1", 1, 1, false}, {"1 KB, c=16", 16, 1, false}, {"1 KB, c=64", 64, 1, false},
		{"32 KB, c=16", 16, 32, false}, {"36 KB agent, c=16", 16, 36, true}}

	var out strings.Builder
	fmt.Fprintf(&out, "make loadtest, %s, %d cores (%s), %s per run, 20-word streamed answers, new prompt text per request\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), cpuModel(), dur)
	tw := tabwriter.NewWriter(&out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\ttarget\treq/s\tTTFB p50 ms\tp90\tp99\ttotal p50 ms\tp99\tCPU ms/req envoy\tsidecar\tredis\tproxy total\tnon-200\t")
	var ratios []string
	for i, sc := range scenarios {
		var rps, cpu, side, ttfb [7]float64
		for j, tg := range targets {
			cfg := loadgen.Config{URL: tg.url, Concurrency: sc.c, Duration: dur, PromptBytes: sc.kb << 10, Seed: uint64(1 + i),
				Headers: map[string]string{"authorization": "Bearer " + testenv.ClientKey, "x-fake-words": "20", "x-user-id": fmt.Sprintf("load-%d", i)}}
			if sc.agent {
				cfg.Agent = agent
			}
			warm := cfg
			warm.Duration = dur / 5
			loadgen.Run(context.Background(), warm)
			before := cpuTimes(t, tg.pids)
			r := loadgen.Run(context.Background(), cfg)
			after := cpuTimes(t, tg.pids)
			if bad := r.Requests - r.Status[200]; bad > 0 || r.Errors > 0 || r.Requests == 0 {
				t.Errorf("%s %s: %d requests, statuses %v, %d errors", sc.name, tg.name, r.Requests, r.Status, r.Errors)
			}
			per := func(p string) float64 {
				if _, ok := tg.pids[p]; !ok || r.Requests == 0 {
					return 0
				}
				return float64(after[p]-before[p]) / float64(time.Millisecond) / float64(r.Requests)
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }
			total := per("envoy") + per("sidecar") + per("redis")
			rps[j], cpu[j], side[j], ttfb[j] = r.RPS(), total, per("sidecar"), float64(loadgen.Quantile(r.TTFB, 0.5))/float64(time.Millisecond)
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t\n", sc.name, tg.name, r.RPS(),
				ms(loadgen.Quantile(r.TTFB, 0.5)), ms(loadgen.Quantile(r.TTFB, 0.9)), ms(loadgen.Quantile(r.TTFB, 0.99)),
				ms(loadgen.Quantile(r.Total, 0.5)), ms(loadgen.Quantile(r.Total, 0.99)),
				per("envoy"), per("sidecar"), per("redis"), total, r.Requests-r.Status[200])
		}
		for _, k := range []int{2, 5, 6} { // (c), (d), (e)
			who := "sidecar"
			if k == 6 {
				who = "pass-through"
			}
			ratios = append(ratios, fmt.Sprintf("%s, %s:\treq/s ÷ (b) %.2f\tproxy CPU/req ÷ (b) %.1f×\t%s CPU %.2f ms/req\tadded TTFB p50 %.2f ms\t",
				sc.name, targets[k].name[:3], rps[k]/rps[1], cpu[k]/cpu[1], who, side[k], ttfb[k]-ttfb[1]))
		}
		ratios = append(ratios, fmt.Sprintf("%s, (f):	ledger on ÷ off (c): sidecar CPU/req %+.1f %%	proxy CPU/req %+.1f %%	req/s %+.1f %%	",
			sc.name, (side[4]/side[2]-1)*100, (cpu[4]/cpu[2]-1)*100, (rps[4]/rps[2]-1)*100))
		ratios = append(ratios, fmt.Sprintf("%s, (c)/(g):\tcut-off on ÷ off: sidecar CPU/req %+.1f %%\tproxy CPU/req %+.1f %%\treq/s %+.1f %%\t",
			sc.name, (side[2]/side[3]-1)*100, (cpu[2]/cpu[3]-1)*100, (rps[2]/rps[3]-1)*100))
	}
	tw.Flush()
	out.WriteString("\n")
	rw := tabwriter.NewWriter(&out, 0, 4, 2, ' ', 0)
	for _, r := range ratios {
		fmt.Fprintln(rw, r)
	}
	rw.Flush()
	t.Log("\n" + out.String())
	if f := os.Getenv("LOADTEST_OUT"); f != "" {
		_ = os.WriteFile(f, []byte(out.String()), 0o644)
	}
}

func cpuTimes(t testing.TB, pids map[string]int) map[string]time.Duration {
	m := map[string]time.Duration{}
	for name, pid := range pids {
		d, err := loadgen.CPUTime(pid)
		if err != nil {
			t.Fatal(err)
		}
		m[name] = d
	}
	return m
}

func cpuModel() string {
	raw, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
