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

// FromUSDFloat converts a provider-reported float dollar amount (OpenRouter's
// usage.cost) to nanos, rounding to the nearest nano-dollar.
func FromUSDFloat(usd float64) Nanos {
	if usd <= 0 || math.IsNaN(usd) || math.IsInf(usd, 0) {
		return 0
	}
	return Nanos(math.Round(usd * float64(NanosPerUSD)))
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
