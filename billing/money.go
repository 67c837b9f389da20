// Package billing holds what a request costs: prices, token counting, the
// budget stores and the settlement of a request's spend.
package billing

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Nanos is an amount of US dollars in nano-dollars (1e-9 USD). Every price
// in the reference price table is a whole number of nano-dollars per token,
// so costs computed in Nanos are exact: no floats touch money.
type Nanos int64

// NanosPerUSD is one dollar.
const NanosPerUSD Nanos = 1_000_000_000

// ParseUSD reads a decimal dollar amount such as "5", "5.0" or "0.000123"
// without going through float64, so "0.1" is exactly 100000000 nanos.
func ParseUSD(s string) (Nanos, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty amount")
	}
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("amount %q is negative", s)
	}
	whole, frac, _ := strings.Cut(strings.TrimPrefix(s, "+"), ".")
	if whole == "" && frac == "" {
		return 0, fmt.Errorf("amount %q is not a number", s)
	}
	if len(frac) > 9 {
		if strings.Trim(frac[9:], "0") != "" {
			return 0, fmt.Errorf("amount %q has more than 9 decimal places", s)
		}
		frac = frac[:9]
	}
	var w, f int64
	var err error
	if whole != "" {
		if w, err = strconv.ParseInt(whole, 10, 64); err != nil || w < 0 {
			return 0, fmt.Errorf("amount %q is not a decimal number", s)
		}
	}
	if frac != "" {
		if f, err = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64); err != nil || f < 0 {
			return 0, fmt.Errorf("amount %q is not a decimal number", s)
		}
	}
	if w > math.MaxInt64/int64(NanosPerUSD)-1 {
		return 0, fmt.Errorf("amount %q is too large", s)
	}
	return Nanos(w)*NanosPerUSD + Nanos(f), nil
}

// ParsePerMTok reads dollars per million tokens ("0.15") as nano-dollars
// per token, the unit prices are kept in; a price finer than that is an
// error rather than a rounding.
func ParsePerMTok(s string) (Nanos, error) {
	n, err := ParseUSD(s)
	if err != nil {
		return 0, err
	}
	if n%1_000_000 != 0 {
		return 0, fmt.Errorf("%q per million tokens is finer than a nano-dollar per token", s)
	}
	return n / 1_000_000, nil
}

// MaxReportedUSD bounds a provider-reported charge for one request. Larger
// figures are a broken or hostile upstream, not a bill; the bound also keeps
// every amount far below 2^53, exact in Redis's Lua numbers.
const MaxReportedUSD = 1_000_000

// FromUSDFloat converts a provider-reported dollar amount (OpenRouter's
// usage.cost) to nanos, rounding to the nearest nano-dollar. ok is false
// for anything that is not a finite amount in [0, MaxReportedUSD].
func FromUSDFloat(usd float64) (n Nanos, ok bool) {
	if math.IsNaN(usd) || usd < 0 || usd > MaxReportedUSD {
		return 0, false
	}
	return Nanos(math.Round(usd * float64(NanosPerUSD))), true
}

// MaxCharge bounds what one request reserves or settles: about $1.1M, more
// than any request costs, and small enough that sums of charges stay exact
// in Redis's Lua numbers (2^53) and far from overflowing a day's total.
const MaxCharge Nanos = 1 << 50

// MaxNanos is where saturating arithmetic stops.
const MaxNanos Nanos = math.MaxInt64

// AddSat returns a + b for non-negative amounts, saturating at MaxNanos.
func AddSat(a, b Nanos) Nanos {
	if a < 0 || b < 0 {
		panic(fmt.Sprintf("billing: negative amount %d + %d", a, b))
	}
	if a > MaxNanos-b {
		return MaxNanos
	}
	return a + b
}

// MulSat returns n × price for non-negative operands, saturating at
// MaxNanos, so no token count an upstream reports can wrap a cost negative.
func MulSat(n int64, price Nanos) Nanos {
	if n < 0 || price < 0 {
		panic(fmt.Sprintf("billing: negative operand %d × %d", n, price))
	}
	if n == 0 || price == 0 {
		return 0
	}
	if Nanos(n) > MaxNanos/price {
		return MaxNanos
	}
	return Nanos(n) * price
}

// String formats n as dollars with all nine decimals trimmed of trailing
// zeros, e.g. "$5" or "$0.00012".
func (n Nanos) String() string {
	sign := ""
	if n < 0 {
		sign, n = "-", -n
	}
	whole, frac := n/NanosPerUSD, n%NanosPerUSD
	if frac == 0 {
		return fmt.Sprintf("%s$%d", sign, whole)
	}
	f := strings.TrimRight(fmt.Sprintf("%09d", frac), "0")
	if len(f) < 2 {
		f += "0"
	}
	return fmt.Sprintf("%s$%d.%s", sign, whole, f)
}

// Decimal formats n as a plain decimal dollar amount ("4.99999"), the form
// used in response headers.
func (n Nanos) Decimal() string {
	return strings.TrimPrefix(strings.Replace(n.String(), "$", "", 1), "+")
}
