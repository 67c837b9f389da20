package providers

import (
	"net/url"
	"strings"
)

// Redact returns raw, a URL someone configured, fit for a message or a
// log: a password in it and every query value are replaced, since either
// may be a credential. Text that is no URL is kept only up to any "@" or
// "?" for the same reason.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexAny(raw, "@?"); i >= 0 {
			return raw[:i] + "…(redacted)"
		}
		return raw
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"redacted"}
		}
		u.RawQuery = q.Encode()
	}
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}
