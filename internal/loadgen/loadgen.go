// Package loadgen drives streaming chat completions at a fixed concurrency
// for a fixed time and measures what clients see: time to first byte,
// total latency, throughput and statuses. It is the load half of `make
// loadtest`; the stacks it is pointed at are started by the caller.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config is one run.
type Config struct {
	URL         string // base URL; requests go to URL + /v1/chat/completions
	Concurrency int
	Duration    time.Duration
	PromptBytes int               // size of each request's new prompt text
	Agent       []byte            // when set, this body is sent instead, with a new system prompt prefix each time
	Headers     map[string]string // sent with every request
	Seed        uint64
}

// Result is what a run measured.
type Result struct {
	Requests int
	Errors   int // transport errors
	Status   map[int]int
	TTFB     []time.Duration
	Total    []time.Duration
	Elapsed  time.Duration
}

// RPS is completed requests per second.
func (r Result) RPS() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// Quantile returns the q-quantile of ds (sorted in place).
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[int(q*float64(len(ds)-1))]
}

// Prompts makes new prompt text per request: a window into a large random
// text, moved and numbered per request, so no two prompts are the same and
// no cache of counts helps, at almost no cost to the client.
type Prompts struct {
	base string
}

var words = strings.Fields(`the a of and to in is for on that with as by it at from this be are or an was
system user agent tool call schema request response budget stream token model provider gateway policy
quarterly report summary analysis customer order invoice shipment warehouse inventory forecast revenue
function parameter return value error retry timeout cache memory file directory search fetch message`)

// NewPrompts builds a 1 MiB random text from seed.
func NewPrompts(seed uint64) *Prompts {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var b strings.Builder
	for b.Len() < 1<<20 {
		b.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(12) == 0 {
			b.WriteString(". ")
		} else {
			b.WriteByte(' ')
		}
	}
	return &Prompts{base: b.String()}
}

// Text is prompt i, n bytes long.
func (p *Prompts) Text(i, n int) string {
	prefix := fmt.Sprintf("Request %d: ", i)
	off := (i * 7919) % (len(p.base) - n)
	return prefix + p.base[off:off+max(n-len(prefix), 0)]
}

// Run sends requests until cfg.Duration passes and returns what it saw.
func Run(ctx context.Context, cfg Config) Result {
	prompts := NewPrompts(cfg.Seed)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency, MaxConnsPerHost: cfg.Concurrency}}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var mu sync.Mutex
	res := Result{Status: map[int]int{}}
	var next int
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				body := cfg.body(prompts, i)
				ttfb, total, status, err := one(ctx, client, cfg, body)
				mu.Lock()
				switch {
				case ctx.Err() != nil: // cut off by the end of the run: not counted
				case err != nil:
					res.Errors++
				default:
					res.Requests++
					res.Status[status]++
					res.TTFB = append(res.TTFB, ttfb)
					res.Total = append(res.Total, total)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
}

func (cfg Config) body(p *Prompts, i int) []byte {
	if cfg.Agent != nil {
		return bytes.Replace(cfg.Agent, []byte(`"content": "You are`), fmt.Appendf(nil, `"content": "%d You are`, i), 1)
	}
	b, _ := json.Marshal(map[string]any{"model": "gpt-4o-mini", "stream": true,
		"messages": []map[string]string{{"role": "user", "content": p.Text(i, cfg.PromptBytes)}}})
	return b
}

func one(ctx context.Context, client *http.Client, cfg Config, body []byte) (ttfb, total time.Duration, status int, err error) {
	req, err := http.NewRequestWithContext(ctx, "POST", cfg.URL+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return 0, 0, 0, err
	}
	req.Header.Set("content-type", "application/json")
	for k, v := range cfg.Headers {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, 0, err
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadByte(); err != nil {
		return 0, 0, 0, err
	}
	ttfb = time.Since(start)
	if _, err := io.Copy(io.Discard, br); err != nil {
		return 0, 0, 0, err
	}
	return ttfb, time.Since(start), resp.StatusCode, nil
}

// CPUTime is the user + system CPU time process pid has used, from
// /proc/<pid>/stat (clock ticks of 10 ms on Linux).
func CPUTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	rest := raw[bytes.LastIndexByte(raw, ')')+2:]
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return time.Duration(u+s) * 10 * time.Millisecond, nil
}
