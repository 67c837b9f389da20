package billing

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func loadPrices(t *testing.T, override string) *Prices {
	t.Helper()
	p, err := LoadPrices(override, Price{Input: 10_000, Output: 30_000})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLookupResolvesProviderIds(t *testing.T) {
	p := loadPrices(t, "")
	cases := map[string]Price{
		// Values from ../shared/data/model_prices.json, in nano-dollars per token.
		// MaxOutput is max_output_tokens there.
		"gpt-4o-mini":                 {Input: 150, Output: 600, CacheRead: 75, MaxOutput: 16384},
		"openai/gpt-4o-mini":          {Input: 150, Output: 600, CacheRead: 75, MaxOutput: 16384},
		"claude-sonnet-4-5":           {Input: 3000, Output: 15000, CacheRead: 300, CacheWrite: 3750, MaxOutput: 64000},
		"anthropic/claude-sonnet-4.5": {Input: 3000, Output: 15000, CacheRead: 300, CacheWrite: 3750, MaxOutput: 1_000_000},
		"text-embedding-3-small":      {Input: 20},
	}
	for model, want := range cases {
		got, ok := p.Lookup(model)
		if !ok || got != want {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v", model, got, ok, want)
		}
	}
}

func TestUnknownModelUsesFallbackAndIsReportedOnce(t *testing.T) {
	p := loadPrices(t, "")
	var reported []string
	p.OnUnknown = func(m string) { reported = append(reported, m) }
	for range 3 {
		if got := p.For("acme/brand-new-model"); got.Input != 10_000 || got.Output != 30_000 {
			t.Fatalf("fallback price = %+v", got)
		}
	}
	if len(reported) != 1 || reported[0] != "acme/brand-new-model" {
		t.Fatalf("reported = %v", reported)
	}
}

func TestPricingFileOverridesAndExtends(t *testing.T) {
	f := filepath.Join(t.TempDir(), "prices.json")
	body := `{"gpt-4o-mini":{"input_cost_per_token":1e-06,"output_cost_per_token":2e-06},
	          "my-model":{"input_cost_per_token":3e-09,"output_cost_per_token":4e-09}}`
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	p := loadPrices(t, f)
	if got, _ := p.Lookup("gpt-4o-mini"); got != (Price{Input: 1000, Output: 2000}) {
		t.Errorf("override = %+v", got)
	}
	if got, _ := p.Lookup("my-model"); got != (Price{Input: 3, Output: 4}) {
		t.Errorf("extension = %+v", got)
	}
	if _, err := LoadPrices(filepath.Join(t.TempDir(), "absent.json"), Price{}); err == nil {
		t.Error("missing pricing file accepted")
	}
}

func TestCost(t *testing.T) {
	p := Price{Input: 3000, Output: 15000, CacheRead: 300, CacheWrite: 3750}
	u := Usage{Input: 100, CacheRead: 1000, CacheWrite: 200, Output: 50, Reasoning: 10}
	want := Nanos(100*3000 + 1000*300 + 200*3750 + 50*15000 + 10*15000)
	if got := p.Cost(u); got != want {
		t.Fatalf("cost = %d, want %d", got, want)
	}
	reported := Nanos(777)
	u.ReportedCost = &reported
	if got := p.Cost(u); got != 777 {
		t.Fatalf("reported cost ignored: %d", got)
	}
	// No cache prices: cached tokens at the input price.
	if got := (Price{Input: 10, Output: 20}).Cost(Usage{CacheRead: 5, Reasoning: 2}); got != 90 {
		t.Fatalf("cost without cache prices = %d", got)
	}
}

// No token count can wrap a cost negative: products and sums saturate.
func TestCostSaturates(t *testing.T) {
	p := Price{Input: 150, Output: 600_000}
	if got := p.Cost(Usage{Input: 1000, Output: 15_500_000_000_000_000}); got != MaxNanos {
		t.Fatalf("cost of 1.55e16 output tokens = %d, want saturation at %d", got, MaxNanos)
	}
	if got := p.Cost(Usage{Input: math.MaxInt64, Output: math.MaxInt64}); got != MaxNanos {
		t.Fatalf("cost = %d", got)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a negative count was priced instead of failing loudly")
		}
	}()
	p.Cost(Usage{Input: -1_000_000})
}

func TestFromUSDFloatBounds(t *testing.T) {
	cases := []struct {
		usd  float64
		want Nanos
		ok   bool
	}{
		{0.00045, 450_000, true}, {0, 0, true}, {1e6, 1e15, true},
		{1e10, 0, false}, {-0.5, 0, false}, {math.NaN(), 0, false}, {math.Inf(1), 0, false},
	}
	for _, c := range cases {
		if got, ok := FromUSDFloat(c.usd); got != c.want || ok != c.ok {
			t.Errorf("FromUSDFloat(%v) = %d, %v; want %d, %v", c.usd, got, ok, c.want, c.ok)
		}
	}
}

// Providers answer with dated snapshots; each resolves to its model.
func TestLookupResolvesDatedSnapshots(t *testing.T) {
	p := loadPrices(t, "")
	mini, _ := p.Lookup("gpt-4o-mini")
	for _, m := range []string{"gpt-4o-mini-2024-07-18", "gpt-4o-mini-2099-01-31", "openai/gpt-4o-mini-2099-01-31"} {
		if got, ok := p.Lookup(m); !ok || got != mini {
			t.Errorf("%s = %+v, %v; want gpt-4o-mini's %+v", m, got, ok, mini)
		}
	}
	sonnet, _ := p.Lookup("claude-sonnet-4-5")
	if got, ok := p.Lookup("claude-sonnet-4-5-20990101"); !ok || got != sonnet {
		t.Errorf("claude-sonnet-4-5-20990101 = %+v, %v", got, ok)
	}
	for _, m := range []string{"gpt-4o-mini-12345678", "gpt-4o-mini-2024-7-18"} {
		if _, ok := p.Lookup(m); ok {
			t.Errorf("%s resolved, but it is no dated snapshot", m)
		}
	}
}

// A provider's own price for a model also prices its dated snapshots, even
// though the shared table has the snapshot at another price: providers
// answer with the dated id, so the own price must win for the bill too.
func TestOwnPricesResolveSnapshotsFirst(t *testing.T) {
	base := loadPrices(t, "")
	if shared, ok := base.Lookup("gpt-4o-mini-2024-07-18"); !ok || shared.Input != 150 {
		t.Fatalf("the shared table's snapshot: %+v %v", shared, ok)
	}
	own, err := base.With("", map[string]Price{"gpt-4o-mini": {Input: 2000, Output: 8000}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini-2024-07-18", "GPT-4o-mini:free"} {
		if p, ok := own.Lookup(m); !ok || p.Input != 2000 || p.Output != 8000 {
			t.Errorf("own table, %s: %+v %v", m, p, ok)
		}
	}
	// The layer below is untouched, and models the provider does not price
	// still come from it.
	if p, _ := base.Lookup("gpt-4o-mini"); p.Input != 150 {
		t.Errorf("the shared table changed: %+v", p)
	}
	if p, ok := own.Lookup("gpt-4o"); !ok || p.Input != 2500 {
		t.Errorf("own table, a model it does not price: %+v %v", p, ok)
	}
	if own.Len() != base.Len() {
		t.Errorf("Len: %d, base %d (gpt-4o-mini is in both)", own.Len(), base.Len())
	}
}
