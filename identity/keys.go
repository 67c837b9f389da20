package identity

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"unicode"

	"sigs.k8s.io/yaml"

	"github.com/aifirewall/aifirewall/billing"
)

// KeysFile holds per-user keys, as SHA-256 digests only:
//
//	keys:
//	  - sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//	    user: alice
//	    daily_limit: "2.50"   # optional, USD
//	    groups: [payments]    # optional: teams, for budgets naming them
//
// The file is re-read when its content changes, without a restart; a file
// that fails to parse leaves the previous keys in force.
type KeysFile struct {
	path string
	mu   sync.RWMutex
	keys map[[32]byte]Caller
	raw  []byte
}

type keysDoc struct {
	// A pointer: a file without a keys list (empty, or caught half
	// written by an editor) is an error, never "no keys".
	Keys *[]struct {
		SHA256     string   `json:"sha256"`
		User       string   `json:"user"`
		DailyLimit string   `json:"daily_limit"`
		Groups     []string `json:"groups"`
	} `json:"keys"`
}

// LoadKeys reads the keys file at path.
func LoadKeys(path string) (*KeysFile, error) {
	k := &KeysFile{path: path}
	if _, err := k.reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// reload re-reads the file; it reports whether the content changed.
func (k *KeysFile) reload() (bool, error) {
	raw, err := os.ReadFile(k.path)
	if err != nil {
		return false, fmt.Errorf("read keys file: %w", err)
	}
	k.mu.RLock()
	same := bytes.Equal(raw, k.raw)
	k.mu.RUnlock()
	if same {
		return false, nil
	}
	keys, err := parseKeys(raw)
	if err != nil {
		return false, fmt.Errorf("keys file %s: %w", k.path, err)
	}
	k.mu.Lock()
	k.keys, k.raw = keys, raw
	k.mu.Unlock()
	return true, nil
}

func parseKeys(raw []byte) (map[[32]byte]Caller, error) {
	var doc keysDoc
	if err := yaml.UnmarshalStrict(raw, &doc); err != nil {
		return nil, err
	}
	if doc.Keys == nil {
		return nil, fmt.Errorf("no 'keys' list (an empty or half-written file?); write 'keys: []' to remove every key")
	}
	keys := map[[32]byte]Caller{}
	for i, e := range *doc.Keys {
		d, err := hex.DecodeString(strings.TrimSpace(e.SHA256))
		if err != nil || len(d) != 32 {
			return nil, fmt.Errorf("keys[%d]: sha256 must be 64 hex digits (the SHA-256 of the key, never the key)", i)
		}
		if e.User == "" {
			return nil, fmt.Errorf("keys[%d]: user is empty", i)
		}
		c := Caller{User: e.User, Groups: e.Groups}
		for _, g := range e.Groups {
			if g == "" || len(g) > 128 || strings.ContainsFunc(g, unicode.IsControl) {
				return nil, fmt.Errorf("keys[%d]: group %q: give a name of 1 to 128 printable characters", i, g)
			}
		}
		if e.DailyLimit != "" {
			if c.Limit, err = billing.ParseUSD(e.DailyLimit); err != nil || c.Limit == 0 {
				return nil, fmt.Errorf("keys[%d]: daily_limit %q is not a positive dollar amount", i, e.DailyLimit)
			}
		}
		var h [32]byte
		copy(h[:], d)
		if _, dup := keys[h]; dup {
			return nil, fmt.Errorf("keys[%d]: the same key is listed twice", i)
		}
		keys[h] = c
	}
	return keys, nil
}

func (k *KeysFile) reloadLogged(log *slog.Logger) {
	changed, err := k.reload()
	switch {
	case err != nil:
		log.Error("keys file not reloaded; the previous keys stay in force", "err", err)
	case changed:
		log.Info("keys file reloaded", "keys", k.Len())
	}
}

// Len is the number of keys.
func (k *KeysFile) Len() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.keys)
}

// Authenticate finds the key's owner. The lookup is by SHA-256 digest, so
// its timing says nothing about any valid key.
func (k *KeysFile) Authenticate(r Request) (Caller, error) {
	key, err := presentedKey(r)
	if err != nil {
		return Caller{}, err
	}
	h := sha256.Sum256([]byte(key))
	k.mu.RLock()
	c, ok := k.keys[h]
	k.mu.RUnlock()
	if !ok {
		return Caller{}, errBadKey
	}
	return c, nil
}

// HashKey is the digest to put in a keys file for key.
func HashKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}
