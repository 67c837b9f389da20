package provider

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/aifirewall/aifirewall/billing"
)

// An upstream's answer is untrusted input like a client's request: a
// broken or hostile provider (or anything between it and us) must not be
// able to wrap a cost negative, credit a budget or crash the sidecar.

// MaxUsageTokens bounds one token count in a usage report: far above any
// context window times any n, far below what could overflow a cost.
const MaxUsageTokens = 1 << 32

// maxModelName bounds the model name an answer may carry.
const maxModelName = 256

// usageReader reads token counts from a usage object, recording the first
// count that is not an integer in [0, MaxUsageTokens].
type usageReader struct {
	u   gjson.Result
	bad string
}

// count reads path; absent or null is 0.
func (r *usageReader) count(path string) int64 {
	v := r.u.Get(path)
	if !v.Exists() || v.Type == gjson.Null {
		return 0
	}
	n, err := strconv.ParseInt(v.Raw, 10, 64)
	if v.Type != gjson.Number || err != nil || n < 0 || n > MaxUsageTokens {
		if r.bad == "" {
			r.bad = fmt.Sprintf("usage.%s = %.40s is not a token count", path, v.Raw)
		}
		return 0
	}
	return n
}

// has says path is present and not null.
func (r *usageReader) has(path string) bool {
	v := r.u.Get(path)
	return v.Exists() && v.Type != gjson.Null
}

// answered keeps the model a provider says it ran, when it names one.
type answered struct {
	model string
}

func (a *answered) take(v gjson.Result) {
	if v.Type == gjson.String && v.Str != "" && len(v.Str) <= maxModelName {
		a.model = v.Str
	}
}

// Model is the model the provider answered with, "" when it named none.
func (a *answered) Model() string { return a.model }

// distrust records why an upstream's usage report was set aside.
type distrust struct {
	reason string
}

func (d *distrust) reject(why string) {
	if d.reason == "" {
		d.reason = why
	}
}

// Distrusted says why usage reported by the upstream was set aside for the
// local count, "" when it was not.
func (d *distrust) Distrusted() string { return d.reason }

// reportedCost reads OpenRouter's usage.cost. A cost of 0 is believed only
// for free variants (":free"); 0 elsewhere, or a negative, non-numeric or
// absurd figure, leaves the bill to the price table.
func reportedCost(v gjson.Result, models ...string) (*billing.Nanos, string) {
	if !v.Exists() || v.Type == gjson.Null {
		return nil, ""
	}
	if v.Type != gjson.Number {
		return nil, fmt.Sprintf("usage.cost = %.40s is not a number", v.Raw)
	}
	n, ok := billing.FromUSDFloat(v.Num)
	if !ok {
		return nil, fmt.Sprintf("usage.cost = %.40s is out of range", v.Raw)
	}
	if n == 0 {
		for _, m := range models {
			if strings.HasSuffix(m, ":free") {
				return &n, ""
			}
		}
		return nil, "usage.cost = 0 for a model that is not a free variant"
	}
	return &n, ""
}
