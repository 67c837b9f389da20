package identity

import (
	"errors"
	"strings"
)

// Mesh identifies workloads by the SPIFFE ID in their client certificate,
// for mesh-wide egress where workloads, not people, hold budgets. The ID
// comes from Envoy's connection.uri_san_peer_certificate attribute (Envoy
// terminated the mTLS connection), or, when TrustXFCC is set, from the
// x-forwarded-client-cert header set by a trusted proxy in front.
type Mesh struct {
	TrustXFCC bool
}

func (m Mesh) Authenticate(r Request) (Caller, error) {
	if id := spiffeID(r.PeerURISAN); id != "" {
		return Caller{User: id}, nil
	}
	if m.TrustXFCC && len(r.XFCC) > 0 {
		if id := xfccURI(r.XFCC[len(r.XFCC)-1]); id != "" {
			return Caller{User: id}, nil
		}
	}
	return Caller{}, errors.New("no workload identity: connect with a client certificate whose URI SAN is a spiffe:// ID")
}

// spiffeID returns the first spiffe:// URI of a comma-separated SAN list.
func spiffeID(sans string) string {
	for _, s := range strings.Split(sans, ",") {
		if s = strings.TrimSpace(s); strings.HasPrefix(s, "spiffe://") {
			return s
		}
	}
	return ""
}

// xfccURI reads the URI of the last element of an XFCC header: the client
// closest to the proxy that set it.
func xfccURI(v string) string {
	elems := splitQuoted(v, ',')
	if len(elems) == 0 {
		return ""
	}
	for _, kv := range splitQuoted(elems[len(elems)-1], ';') {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok && strings.EqualFold(k, "URI") {
			return spiffeID(strings.Trim(val, `"`))
		}
	}
	return ""
}

// splitQuoted splits s at sep outside double quotes.
func splitQuoted(s string, sep byte) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case sep:
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}
