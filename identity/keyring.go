package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/loop"
)

// Keyring is per-user keys from the keys file (may be nil) together with
// the keys added and revoked through the operator API, which live in the
// budget store and are re-read every refresh interval: a revocation
// reaches every sidecar within that interval.
type Keyring struct {
	file  *KeysFile
	store billing.KeyStore

	mu      sync.RWMutex
	added   map[[32]byte]Caller
	revoked map[[32]byte]bool
}

// NewKeyring reads the store's keys once; file may be nil.
func NewKeyring(ctx context.Context, file *KeysFile, store billing.KeyStore) (*Keyring, error) {
	k := &Keyring{file: file, store: store}
	if err := k.Refresh(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// NewKeyringEmpty is a keyring whose run-time keys load at the first
// successful Refresh.
func NewKeyringEmpty(file *KeysFile, store billing.KeyStore) *Keyring {
	return &Keyring{file: file, store: store}
}

// Refresh re-reads the keys added and revoked at run time.
func (k *Keyring) Refresh(ctx context.Context) error {
	added, revoked, err := k.store.Keys(ctx)
	if err != nil {
		return err
	}
	a, r := map[[32]byte]Caller{}, map[[32]byte]bool{}
	for sha, key := range added {
		if d, ok := digest(sha); ok {
			a[d] = Caller{User: key.User, Limit: key.Limit, Groups: key.Groups}
		}
	}
	for sha := range revoked {
		if d, ok := digest(sha); ok {
			r[d] = true
		}
	}
	k.mu.Lock()
	k.added, k.revoked = a, r
	k.mu.Unlock()
	return nil
}

// Watch re-reads the keys file (a parse failure keeps the keys in force)
// and the run-time keys every interval until ctx ends.
func (k *Keyring) Watch(ctx context.Context, interval time.Duration, log *slog.Logger) {
	loop.Every(ctx, interval, func() {
		if k.file != nil {
			k.file.reloadLogged(log)
		}
		rctx, cancel := context.WithTimeout(ctx, interval)
		defer cancel()
		if err := k.Refresh(rctx); err != nil {
			log.Warn("run-time keys not refreshed; the previous set stays in force", "err", err)
		}
	})
}

func digest(sha string) ([32]byte, bool) {
	var d [32]byte
	b, err := hex.DecodeString(sha)
	if err != nil || len(b) != 32 {
		return d, false
	}
	copy(d[:], b)
	return d, true
}

var errRevoked = errors.New("this API key was revoked; ask your gateway operator for a new one and set it as your client's API key")

func (k *Keyring) Authenticate(r Request) (Caller, error) {
	key, err := presentedKey(r)
	if err != nil {
		return Caller{}, err
	}
	h := sha256.Sum256([]byte(key))
	k.mu.RLock()
	revoked := k.revoked[h]
	c, ok := k.added[h]
	k.mu.RUnlock()
	if revoked {
		return Caller{}, errRevoked
	}
	if ok {
		return c, nil
	}
	if k.file != nil {
		return k.file.Authenticate(r)
	}
	return Caller{}, errBadKey
}
