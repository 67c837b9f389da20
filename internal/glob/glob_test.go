package glob

import "testing"

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		p, s string
		ok   bool
	}{
		{"gpt-4o", "gpt-4o", true}, {"gpt-4o", "gpt-4o-mini", false}, {"gpt-4o*", "gpt-4o-mini", true},
		{"*", "", true}, {"a*b*c", "abc", true}, {"a*b*c", "axxbyyc", true}, {"a*b*c", "acb", false},
		{"ab*ba", "aba", false}, {"*/gpt-4o", "openai/gpt-4o", true}, {"spiffe://x/*", "spiffe://x/ns/a/sa/b", true},
	} {
		if Match(c.p, c.s) != c.ok {
			t.Errorf("glob(%q, %q) != %v", c.p, c.s, c.ok)
		}
	}
}
