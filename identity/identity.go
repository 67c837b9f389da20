// Package identity decides who is calling: a holder of the shared gateway
// key (who then names the user), the owner of a per-user key, or a mesh
// workload known by the SPIFFE ID of its client certificate.
package identity

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"

	"github.com/aifirewall/aifirewall/billing"
)

// Request is what a request shows of its caller.
type Request struct {
	Authorization []string // every Authorization header value
	APIKey        []string // every x-api-key value (Anthropic clients)
	XFCC          []string // x-forwarded-client-cert values
	PeerURISAN    string   // Envoy's connection.uri_san_peer_certificate
}

// Caller is who the request is from.
type Caller struct {
	// User is the budget holder; empty when the caller may name it
	// (shared key: x-user-id, then the body's user field).
	User string
	// Limit overrides the default daily limit when not zero.
	Limit billing.Nanos
}

// Authenticator turns a request into a Caller. Its errors are safe to show
// the client and say what to do.
type Authenticator interface {
	Authenticate(r Request) (Caller, error)
}

var errNoKey = errors.New("no API key provided; send 'Authorization: Bearer <key>' with the key your gateway operator gave you")
var errBadKey = errors.New("invalid API key; send 'Authorization: Bearer <key>' with the key your gateway operator gave you")

// presentedKey is the one key a request carries.
func presentedKey(r Request) (string, error) {
	errMany := errors.New("more than one API key was sent; send exactly one 'Authorization: Bearer <key>'")
	if len(r.Authorization) > 1 || len(r.APIKey) > 1 {
		return "", errMany
	}
	var key string
	if len(r.Authorization) == 1 {
		scheme, k, ok := strings.Cut(r.Authorization[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			return "", errors.New("the Authorization header must be 'Bearer <key>'")
		}
		key = strings.TrimSpace(k)
	}
	if len(r.APIKey) == 1 {
		// Some clients send the key both ways; two different keys are
		// ambiguous and refused.
		if k := strings.TrimSpace(r.APIKey[0]); key == "" {
			key = k
		} else if k != key {
			return "", errMany
		}
	}
	if key == "" {
		return "", errNoKey
	}
	return key, nil
}

// SharedKey is the seed's mode: one gateway key for everyone.
type SharedKey struct{ hash [32]byte }

// NewSharedKey accepts key.
func NewSharedKey(key string) *SharedKey { return &SharedKey{hash: sha256.Sum256([]byte(key))} }

func (s *SharedKey) Authenticate(r Request) (Caller, error) {
	key, err := presentedKey(r)
	if err != nil {
		return Caller{}, err
	}
	// Comparing fixed-size digests in constant time leaks neither the
	// key's content nor its length.
	h := sha256.Sum256([]byte(key))
	if subtle.ConstantTimeCompare(h[:], s.hash[:]) != 1 {
		return Caller{}, errBadKey
	}
	return Caller{}, nil
}
