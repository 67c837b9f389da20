package identity

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/aifirewall/aifirewall/internal/glob"
)

// Mesh identifies workloads by the SPIFFE ID in their client certificate,
// for mesh-wide egress where workloads, not people, hold budgets. The ID
// comes from Envoy's connection.uri_san_peer_certificate attribute (Envoy
// terminated the mTLS connection), or, when TrustXFCC is set, from the
// x-forwarded-client-cert header set by a trusted proxy in front.
type Mesh struct {
	TrustXFCC bool
	// Groups map SPIFFE IDs to groups, for the budgets that name them.
	Groups []MeshGroup
}

// MeshGroup gives the group Group to the SPIFFE IDs matching Pattern ("*"
// matching any run). Group "{namespace}" is the namespace of an ID of
// Kubernetes' form (spiffe://<trust domain>/ns/<namespace>/sa/<account>).
type MeshGroup struct{ Pattern, Group string }

func (m Mesh) Authenticate(r Request) (Caller, error) {
	id := spiffeID(r.PeerURISAN)
	if id == "" && m.TrustXFCC && len(r.XFCC) > 0 {
		id = xfccURI(r.XFCC[len(r.XFCC)-1])
	}
	if id == "" {
		return Caller{}, errors.New("no workload identity: connect with a client certificate whose URI SAN is a spiffe:// ID")
	}
	return Caller{User: id, Groups: m.groupsOf(id)}, nil
}

func (m Mesh) groupsOf(id string) []string {
	var out []string
	for _, g := range m.Groups {
		if !glob.Match(g.Pattern, id) {
			continue
		}
		group := g.Group
		if group == "{namespace}" {
			if group = kubernetesNamespace(id); group == "" {
				continue
			}
		}
		if !slices.Contains(out, group) {
			out = append(out, group)
		}
	}
	return out
}

// kubernetesNamespace is the <ns> of spiffe://<td>/ns/<ns>/sa/<name>.
func kubernetesNamespace(id string) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return ""
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" || parts[2] == "" {
		return ""
	}
	return parts[2]
}

// ParseMeshGroups reads MESH_GROUPS: pattern=group pairs, comma-separated.
func ParseMeshGroups(pairs []string) ([]MeshGroup, error) {
	var out []MeshGroup
	for _, p := range pairs {
		pattern, group, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || !strings.HasPrefix(pattern, "spiffe://") || group == "" || len(group) > 128 {
			return nil, fmt.Errorf("%q is not spiffe://<pattern>=<group> (e.g. spiffe://cluster.local/ns/*/sa/*={namespace})", p)
		}
		out = append(out, MeshGroup{Pattern: pattern, Group: group})
	}
	return out, nil
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
