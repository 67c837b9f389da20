package billing

import "testing"

// Every token of up to shortMax bytes is found with its rank, and pieces
// that are no token are not, those that pack alike included.
func TestShortTable(t *testing.T) {
	tk := newTokenizer(t)
	for _, c := range []*bpeCounter{tk.o200k, tk.cl100k} {
		ranks := vocabulary(t, c)
		n := 0
		for tok, r := range ranks {
			if len(tok) <= shortMax {
				n++
				if got := c.short.rank(tok); got != int32(r) {
					t.Fatalf("%q: rank %d, want %d", tok, got, r)
				}
				// Trailing zero bytes pack alike; only the length tells.
				for p := tok + "\x00"; len(p) <= shortMax; p += "\x00" {
					if _, ok := ranks[p]; !ok && c.short.rank(p) >= 0 {
						t.Fatalf("%q is no token, but found", p)
					}
				}
			}
		}
		if n < 10000 {
			t.Fatalf("only %d short tokens", n)
		}
		for _, p := range []string{"\x00\x00", "a\x00", "\x00a", " the\x00", "zqxjzqxj", "東京都庁", "\xff\xfe"} {
			if _, ok := ranks[p]; !ok && c.short.rank(p) >= 0 {
				t.Errorf("%q is no token, but found", p)
			}
		}
	}
	// In a table of two slots every probe meets the one token.
	tiny := newShortTable([]token{{"a", 7}})
	for p := "a\x00"; len(p) <= shortMax; p += "\x00" {
		if r := tiny.rank(p); r >= 0 {
			t.Errorf("%q found as rank %d in a table of \"a\" alone", p, r)
		}
	}
	if r := tiny.rank("a"); r != 7 {
		t.Errorf("\"a\": rank %d, want 7", r)
	}
}
