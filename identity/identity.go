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
	// JWTPayload is the token Envoy's jwt_authn filter verified, from its
	// dynamic metadata; JWTFailure why it refused one (nil, "": none sent).
	JWTPayload map[string]any
	JWTFailure string
}

// Caller is who the request is from.
type Caller struct {
	// User is the budget holder; empty when the caller may name it
	// (shared key: x-user-id, then the body's user field).
	User string
	// Limit overrides the default daily limit when not zero.
	Limit billing.Nanos
	// Groups the caller belongs to (teams), for the budgets that name
	// them; only ever from a verified source (the keys file).
	Groups []string
}

// Authenticator turns a request into a Caller. Its errors are safe to show
// the client and say what to do.
type Authenticator interface {
	Authenticate(r Request) (Caller, error)
}

// The texts of 401s say what to do without spelling a credential header:
// agent clients redact anything shaped like one ("Authorization: Bearer
// <…>", "x-api-key: …") before a person sees it.
var (
	errNoKey  = errors.New("no API key was sent: this gateway needs its own API key, not a provider's; ask your gateway operator for one and set it as your client's API key")
	errBadKey = errors.New("this API key is not valid here: this gateway needs its own API key, not a provider's; ask your gateway operator for one and set it as your client's API key")
	errMany   = errors.New("more than one API key was sent (two Authorization headers, or different keys in the Authorization and the x-api-key headers); configure your client with only the key your gateway operator gave you")
	errScheme = errors.New("the Authorization header uses a scheme this gateway does not take; set the gateway key as your client's API key (OpenAI and Anthropic SDKs then send it the right way) instead of building the header by hand")
)

// presentedKey is the one key a request carries.
func presentedKey(r Request) (string, error) {
	if len(r.Authorization) > 1 || len(r.APIKey) > 1 {
		return "", errMany
	}
	var key string
	if len(r.Authorization) == 1 {
		scheme, k, ok := strings.Cut(r.Authorization[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			return "", errScheme
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

// SharedAndKeys is the default mode: the seed's shared key and, beside
// it, the per-user keys of a keyring (keys file and operator-made), so a
// team moves from one shared key to per-user keys one user at a time. A
// per-user key names its budget holder; the shared key lets the caller
// name it, as in the seed.
type SharedAndKeys struct {
	Shared *SharedKey
	Keys   *Keyring
}

func (m SharedAndKeys) Authenticate(r Request) (Caller, error) {
	c, err := m.Shared.Authenticate(r)
	if err != errBadKey {
		return c, err
	}
	return m.Keys.Authenticate(r)
}
