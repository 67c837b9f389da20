package identity

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// JWT identifies callers by a token their identity provider signed, as
// Envoy's jwt_authn filter verified it (issuer, audience, signature,
// expiry; "alg: none" and unknown keys refused) and passed on in its
// dynamic metadata: never from a header a client could set. The identity
// is a claim of the payload (sub by default), the groups another (groups,
// or e.g. kubernetes.io.namespace for a service-account token's
// namespace); a dotted name walks nested claims.
type JWT struct {
	UserClaim, GroupsClaim string
}

func (j JWT) Authenticate(r Request) (Caller, error) {
	if r.JWTPayload == nil {
		// jwt_authn's words for a request without a token.
		if r.JWTFailure != "" && r.JWTFailure != "Jwt is missing" {
			return Caller{}, fmt.Errorf("the bearer token was refused (%s): send a current token your identity provider issued for this gateway", r.JWTFailure)
		}
		return Caller{}, errors.New("no bearer token was sent: this gateway takes a token from your identity provider (Authorization: Bearer <JWT>)")
	}
	user, _ := claim(r.JWTPayload, j.UserClaim).(string)
	// Braces would break the budget store's hash tags; "budget=" names
	// budgets' counters.
	if user == "" || len(user) > 256 || strings.ContainsAny(user, "{}") || strings.ContainsFunc(user, unicode.IsControl) ||
		strings.HasPrefix(user, "budget=") {
		return Caller{}, fmt.Errorf("the token has no usable %q claim to name you by; ask your gateway operator", j.UserClaim)
	}
	c := Caller{User: user}
	if j.GroupsClaim == "" {
		return c, nil
	}
	switch g := claim(r.JWTPayload, j.GroupsClaim).(type) {
	case string:
		c.Groups = []string{g}
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok && s != "" && len(s) <= 128 {
				c.Groups = append(c.Groups, s)
			}
		}
	}
	return c, nil
}

// claim walks a dotted claim name through nested objects; a claim whose
// own name has a dot ("kubernetes.io") is tried whole first.
func claim(payload map[string]any, name string) any {
	if v, ok := payload[name]; ok {
		return v
	}
	for i := len(name) - 1; i > 0; i-- {
		if name[i] != '.' {
			continue
		}
		if inner, ok := payload[name[:i]].(map[string]any); ok {
			if v := claim(inner, name[i+1:]); v != nil {
				return v
			}
		}
	}
	return nil
}
