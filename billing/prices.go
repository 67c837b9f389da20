package billing

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
)

//go:embed prices.json
var embeddedPrices []byte

// Price is what one token of each kind costs, in nano-dollars.
type Price struct {
	Input      Nanos // prompt tokens not served from a cache
	Output     Nanos // completion tokens
	CacheRead  Nanos // prompt tokens read from the provider's cache
	CacheWrite Nanos // prompt tokens written to the cache (Anthropic)
	Reasoning  Nanos // reasoning tokens; 0 means "at the output price"
	// MaxOutput is the model's output limit in tokens (0: unknown): what
	// a request without max_tokens may generate at most.
	MaxOutput int64
}

// SameRates reports whether p and q price every kind of token alike.
func (p Price) SameRates(q Price) bool {
	p.MaxOutput, q.MaxOutput = 0, 0
	return p == q
}

// Cost prices u. A provider-reported cost (OpenRouter's usage.cost) wins,
// since it is what the provider invoices.
func (p Price) Cost(u Usage) Nanos {
	if u.ReportedCost != nil {
		return *u.ReportedCost
	}
	or := func(v, dflt Nanos) Nanos {
		if v == 0 {
			return dflt
		}
		return v
	}
	// Counts are non-negative by the meters' validation; a negative one
	// here is a bug, and panics (one request fails) rather than credit.
	c := MulSat(u.Input, p.Input)
	c = AddSat(c, MulSat(u.CacheRead, or(p.CacheRead, p.Input)))
	c = AddSat(c, MulSat(u.CacheWrite, or(p.CacheWrite, p.Input)))
	c = AddSat(c, MulSat(u.Output, p.Output))
	return AddSat(c, MulSat(u.Reasoning, or(p.Reasoning, p.Output)))
}

// Prices maps model ids to prices. Unknown models get the fallback price,
// never $0, and are reported once each through OnUnknown.
type Prices struct {
	// layers are searched in order, each for every spelling of a model
	// (see candidates) before the next: a provider's own prices, then
	// PRICING_FILE, then the embedded table. A layer's "gpt-4o-mini" thus
	// prices "gpt-4o-mini-2024-07-18" even where a layer below has the
	// snapshot itself.
	layers   []map[string]Price
	fallback Price

	// OnUnknown, when set, is called the first time a model is priced at
	// the fallback price (for a log line and a metric).
	OnUnknown func(model string)
	seen      sync.Map

	ceilingOnce sync.Once
	ceiling     Price
}

// LoadPrices builds the table from the embedded prices, then the file at
// overridePath (same format, LiteLLM's JSON) when it is not empty.
func LoadPrices(overridePath string, fallback Price) (*Prices, error) {
	t := &Prices{layers: []map[string]Price{{}}, fallback: fallback}
	if err := merge(t.layers[0], embeddedPrices); err != nil {
		return nil, fmt.Errorf("embedded prices: %w", err)
	}
	if overridePath == "" {
		return t, nil
	}
	return t.With(overridePath, nil)
}

// With returns a copy of the table with the prices of the file at
// overridePath (LiteLLM's JSON, may be "") and then those of models laid
// over it: one provider's own prices over the shared table.
func (t *Prices) With(overridePath string, models map[string]Price) (*Prices, error) {
	layer := make(map[string]Price, len(models))
	if overridePath != "" {
		raw, err := os.ReadFile(overridePath)
		if err != nil {
			return nil, fmt.Errorf("read pricing file: %w", err)
		}
		if err := merge(layer, raw); err != nil {
			return nil, fmt.Errorf("pricing file %s: %w", overridePath, err)
		}
	}
	for m, p := range models {
		// Keys are looked up lower-cased (see candidates).
		layer[strings.ToLower(strings.TrimSpace(m))] = p
	}
	// Layers below are shared, never written after they are built.
	return &Prices{layers: append([]map[string]Price{layer}, t.layers...), fallback: t.fallback, OnUnknown: t.OnUnknown}, nil
}

type priceRow struct {
	Input      *float64 `json:"input_cost_per_token"`
	Output     *float64 `json:"output_cost_per_token"`
	Reasoning  *float64 `json:"output_cost_per_reasoning_token"`
	CacheRead  *float64 `json:"cache_read_input_token_cost"`
	CacheWrite *float64 `json:"cache_creation_input_token_cost"`
	MaxOutput  *float64 `json:"max_output_tokens"`
}

func merge(layer map[string]Price, raw []byte) error {
	var rows map[string]json.RawMessage
	if err := json.Unmarshal(raw, &rows); err != nil {
		return err
	}
	for model, msg := range rows {
		var r priceRow
		if err := json.Unmarshal(msg, &r); err != nil || r.Input == nil {
			continue // LiteLLM's sample_spec and non-token-priced entries
		}
		p, err := r.price()
		if err != nil {
			return fmt.Errorf("model %q: %w", model, err)
		}
		layer[model] = p
	}
	return nil
}

func (r priceRow) price() (Price, error) {
	var p Price
	for _, f := range []struct {
		src *float64
		dst *Nanos
	}{{r.Input, &p.Input}, {r.Output, &p.Output}, {r.Reasoning, &p.Reasoning}, {r.CacheRead, &p.CacheRead}, {r.CacheWrite, &p.CacheWrite}} {
		if f.src == nil {
			continue
		}
		n, err := perTokenNanos(*f.src)
		if err != nil {
			return p, err
		}
		*f.dst = n
	}
	if r.MaxOutput != nil && *r.MaxOutput >= 1 && *r.MaxOutput <= 1<<30 {
		p.MaxOutput = int64(*r.MaxOutput)
	}
	return p, nil
}

// perTokenNanos converts a per-token dollar price to nano-dollars. Prices are
// decimal literals like 1.5e-07; the float product lands within rounding
// error of a whole number, which is what the check below insists on.
func perTokenNanos(usd float64) (Nanos, error) {
	if usd < 0 || math.IsNaN(usd) || math.IsInf(usd, 0) {
		return 0, fmt.Errorf("price %v is not a non-negative number", usd)
	}
	x := usd * float64(NanosPerUSD)
	r := math.Round(x)
	if math.Abs(x-r) > 1e-6*math.Max(1, r) {
		return 0, fmt.Errorf("price %v USD/token is finer than a nano-dollar", usd)
	}
	return Nanos(r), nil
}

// Lookup returns the price of model and whether the table knows it.
// OpenRouter ids ("openai/gpt-4o-mini") resolve to OpenRouter's own entry
// when there is one, else to the vendor's bare model name.
func (t *Prices) Lookup(model string) (Price, bool) {
	// The common case, a name the first table has as it is, without
	// building the candidates: it is the first they would try.
	if len(t.layers) > 0 {
		if m := strings.ToLower(strings.TrimSpace(model)); m == model {
			if p, ok := t.layers[0][m]; ok {
				return p, true
			}
		}
	}
	keys := candidates(model)
	for _, layer := range t.layers {
		for _, key := range keys {
			if p, ok := layer[key]; ok {
				return p, true
			}
		}
	}
	return Price{}, false
}

// For returns the price to bill model at: the table's, or the fallback.
func (t *Prices) For(model string) Price {
	if p, ok := t.Lookup(model); ok {
		return p
	}
	if _, dup := t.seen.LoadOrStore(model, true); !dup && t.OnUnknown != nil {
		t.OnUnknown(model)
	}
	return t.fallback
}

func candidates(model string) []string {
	m := strings.ToLower(strings.TrimSpace(model))
	// OpenRouter variants (":free", ":online", ":thinking") are priced as the base model here.
	base, _, _ := strings.Cut(m, ":")
	keys := []string{m, "openrouter/" + m}
	if base != m {
		keys = append(keys, base, "openrouter/"+base)
	}
	if _, bare, ok := strings.Cut(base, "/"); ok {
		keys = append(keys, bare)
	}
	// Providers answer with dated snapshots (gpt-4o-mini-2024-07-18,
	// claude-3-5-haiku-20241022): when the table lacks the snapshot, it is
	// priced as the model it is a snapshot of.
	for _, k := range keys {
		if undated, ok := stripDate(k); ok {
			keys = append(keys, undated)
		}
	}
	return keys
}

// stripDate removes a trailing -YYYY-MM-DD or -YYYYMMDD.
func stripDate(model string) (string, bool) {
	digits := func(s string) bool {
		for _, c := range s {
			if c < '0' || c > '9' {
				return false
			}
		}
		return true
	}
	n := len(model)
	if n > 11 && model[n-11] == '-' && model[n-6] == '-' && model[n-3] == '-' &&
		digits(model[n-10:n-6]+model[n-5:n-3]+model[n-2:]) {
		return model[:n-11], true
	}
	if n > 9 && model[n-9] == '-' && digits(model[n-8:]) && (model[n-8:n-6] == "20" || model[n-8:n-6] == "19") {
		return model[:n-9], true
	}
	return "", false
}

// Ceiling is a price no model of the table exceeds in any kind of token
// (each kind's dearest, the fallback included): the reservation of a
// request that lets the provider choose the model.
func (t *Prices) Ceiling() Price {
	t.ceilingOnce.Do(func() {
		c := t.fallback
		for _, layer := range t.layers {
			for _, p := range layer {
				c.Input, c.Output = max(c.Input, p.Input), max(c.Output, p.Output)
				c.CacheRead, c.CacheWrite = max(c.CacheRead, p.CacheRead), max(c.CacheWrite, p.CacheWrite)
				c.Reasoning, c.MaxOutput = max(c.Reasoning, p.Reasoning), max(c.MaxOutput, p.MaxOutput)
			}
		}
		t.ceiling = c
	})
	return t.ceiling
}

// Len is the number of models in the table.
func (t *Prices) Len() int {
	seen := map[string]bool{}
	for _, layer := range t.layers {
		for m := range layer {
			seen[m] = true
		}
	}
	return len(seen)
}
