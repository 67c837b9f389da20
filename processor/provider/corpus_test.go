package provider

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/sse"
)

// corpusCase is one row of testdata/corpus/cases.json: a request, the
// provider's response in its documented format, and the hand-computed bill.
type corpusCase struct {
	Name         string          `json:"name"`
	Provider     Kind            `json:"provider"`
	Path         string          `json:"path"`
	Request      json.RawMessage `json:"request"`
	RequestFile  string          `json:"request_file"` // under testdata/, for requests too large to inline
	Response     string          `json:"response"`
	Usage        *billing.Usage  `json:"usage"`
	CostNanos    int64           `json:"cost_nanos"`
	FallbackText string          `json:"fallback_text"`
}

var (
	fixOnce sync.Once
	fixTK   *billing.Tokenizer
	fixP    *billing.Prices
)

func fixtures(t testing.TB) (*billing.Tokenizer, *billing.Prices) {
	fixOnce.Do(func() {
		var err error
		if fixTK, err = billing.NewTokenizer(); err != nil {
			t.Fatal(err)
		}
		if fixP, err = billing.LoadPrices("", billing.Price{Input: 1, Output: 1}); err != nil {
			t.Fatal(err)
		}
	})
	return fixTK, fixP
}

func loadCorpus(t testing.TB) []corpusCase {
	raw, err := os.ReadFile(filepath.Join("testdata", "corpus", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []corpusCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		if c.RequestFile != "" {
			cases[i].Request = []byte(readFile(t, filepath.Join("testdata", c.RequestFile)))
		}
	}
	return cases
}

func (c corpusCase) body(t testing.TB) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", "corpus", c.Response))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// meter runs the response through a fresh meter, cut at cuts, the way the
// processor does: SSE streams event by event, JSON bodies whole at the end.
// With an odd number of cuts the meter is asked for its count after every
// event, as for a stream near its room; its bound is checked against it.
func meter(t testing.TB, c corpusCase, resp []byte, cuts []int) (billing.Usage, *Request) {
	tk, _ := fixtures(t)
	route, ok := c.Provider.Route("POST", c.Path)
	if !ok {
		t.Fatalf("%s: no route for %s", c.Name, c.Path)
	}
	req, err := route.Endpoint.ParseRequest(c.Request, tk)
	if err != nil {
		t.Fatalf("%s: request: %v", c.Name, err)
	}
	// Half the splits count as a stream near its room does (at every
	// event): the bill must not change.
	running := len(cuts)%2 == 1
	m := route.Endpoint.NewMeter(req, tk)
	if !strings.HasSuffix(c.Response, ".sse") {
		m.Body(resp)
		return m.Usage(), req
	}
	var p sse.Parser
	emit := func(ev sse.Event) {
		m.Event(ev)
		if running {
			if b, n := m.Bound(), m.Counted(); b.Output < n.Output || b.Input != n.Input {
				t.Fatalf("%s: bound %+v under the count %+v", c.Name, b, n)
			}
		}
	}
	prev := 0
	for _, cut := range append(cuts, len(resp)) {
		p.Feed(resp[prev:cut], emit)
		prev = cut
	}
	p.Flush(emit)
	return m.Usage(), req
}

func (c corpusCase) want(t testing.TB, req *Request) (billing.Usage, billing.Nanos) {
	tk, _ := fixtures(t)
	if c.Usage != nil {
		return *c.Usage, billing.Nanos(c.CostNanos)
	}
	u := billing.Usage{Input: req.PromptTokens, Output: int64(tk.Count(req.Model, c.FallbackText))}
	price, _ := fixP.Lookup(req.Model)
	return u, price.Cost(u)
}

// Every corpus stream, cut in two at every byte and into many pieces at
// random, bills exactly the hand-computed amount.
func TestCorpusBillsExactlyAtEverySplit(t *testing.T) {
	_, prices := fixtures(t)
	for _, c := range loadCorpus(t) {
		t.Run(c.Name, func(t *testing.T) {
			resp := c.body(t)
			splits := [][]int{nil}
			for i := 0; i <= len(resp); i++ {
				splits = append(splits, []int{i})
			}
			rng := rand.New(rand.NewPCG(7, uint64(len(resp))))
			for range 300 {
				var cuts []int
				for at := rng.IntN(16); at < len(resp); at += 1 + rng.IntN(64) {
					cuts = append(cuts, at)
				}
				splits = append(splits, cuts)
			}
			for _, cuts := range splits {
				got, req := meter(t, c, resp, cuts)
				wantU, wantCost := c.want(t, req)
				if got.ReportedCost != nil {
					wantU.ReportedCost = got.ReportedCost
				}
				if got != wantU {
					t.Fatalf("cuts %v: usage %+v, want %+v", cuts, got, wantU)
				}
				if cost := prices.For(req.Model).Cost(got); cost != wantCost {
					t.Fatalf("cuts %v: cost %d, want %d", cuts, cost, wantCost)
				}
			}
		})
	}
}

// The streamed text the fallback counts matches counting it whole, even
// when the tally flushes on the way or is asked for its count after
// every piece (a stream near its room), when it then equals counting what
// came so far whole; its bound is never under the count.
func TestTallyMatchesWholeCount(t *testing.T) {
	tk, _ := fixtures(t)
	text := strings.Repeat("Streaming answers arrive in pieces, word by word; ", 400)
	want := int64(tk.Count("gpt-4o", text))
	for _, asked := range []bool{false, true} {
		ta := tally{tk: tk, model: "gpt-4o", heldLen: -1}
		for i := 0; i < len(text); i += 7 {
			ta.add(text[i:min(i+7, len(text))])
			if ta.buf.Len() >= tallyFlush {
				t.Fatalf("the tally holds %d bytes", ta.buf.Len())
			}
			if !asked {
				continue
			}
			b := ta.bound()
			n := ta.running()
			if b < n {
				t.Fatalf("bound %d under the count %d", b, n)
			}
			if ta.buf.Len() > 64 {
				t.Fatalf("a tally asked for its count holds %d bytes", ta.buf.Len())
			}
			if i%(7*50) == 0 {
				if want := int64(tk.Count("gpt-4o", text[:i+7])); n != want {
					t.Fatalf("running = %d after %d bytes, counting them whole = %d", n, i+7, want)
				}
			}
		}
		if run := ta.running(); asked && run != want {
			t.Fatalf("running = %d at the end, whole = %d", run, want)
		}
		if got := ta.total(); got != want {
			t.Fatalf("asked %v: tally = %d, whole = %d", asked, got, want)
		}
	}
}
