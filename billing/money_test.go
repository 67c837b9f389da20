package billing

import (
	"math"
	"testing"
	"time"
	_ "time/tzdata" // the zone database, whatever the machine has
)

func TestParseUSD(t *testing.T) {
	good := map[string]Nanos{"5": 5_000_000_000, "5.0": 5_000_000_000, "0.1": 100_000_000,
		"0.000000001": 1, ".5": 500_000_000, "12.3400000000": 12_340_000_000}
	for in, want := range good {
		if got, err := ParseUSD(in); err != nil || got != want {
			t.Errorf("ParseUSD(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "abc", "1.0000000001", "1e3", "."} {
		if _, err := ParseUSD(in); err == nil {
			t.Errorf("ParseUSD(%q) accepted", in)
		}
	}
}

func TestNanosString(t *testing.T) {
	cases := map[Nanos]string{0: "$0", 5 * NanosPerUSD: "$5", 1_500_000_000: "$1.50", 120_000: "$0.00012"}
	for n, want := range cases {
		if got := n.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int64(n), got, want)
		}
	}
}

func TestNextResetAcrossDST(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	// 2026-03-29 is 23 hours long in Paris.
	at := time.Date(2026, 3, 29, 0, 30, 0, 0, paris)
	if got := NextReset(at, paris).Sub(at); got != 22*time.Hour+30*time.Minute {
		t.Fatalf("until reset = %v", got)
	}
	if d := Day(time.Date(2026, 11, 27, 23, 59, 0, 0, time.UTC), time.UTC); d != "2026-11-27" {
		t.Fatalf("day = %s", d)
	}
}

func TestSaturatingArithmetic(t *testing.T) {
	cases := []struct {
		n     int64
		price Nanos
		want  Nanos
	}{
		{1000, 150, 150_000}, {0, MaxNanos, 0}, {math.MaxInt64, 2, MaxNanos}, {1 << 40, 1 << 30, MaxNanos},
	}
	for _, c := range cases {
		if got := MulSat(c.n, c.price); got != c.want {
			t.Errorf("MulSat(%d, %d) = %d, want %d", c.n, c.price, got, c.want)
		}
	}
	if got := AddSat(MaxNanos-1, 5); got != MaxNanos {
		t.Errorf("AddSat near the top = %d", got)
	}
	if got := AddSat(2, 3); got != 5 {
		t.Errorf("AddSat(2, 3) = %d", got)
	}
}
