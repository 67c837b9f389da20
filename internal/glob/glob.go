// Package glob matches the patterns operators write for identities and
// models: "*" matches any run of characters (slashes included), everything
// else matches itself.
package glob

import "strings"

// Match reports whether s fits pattern. Linear in len(s) for one star;
// patterns come from the operator and are short.
func Match(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}
