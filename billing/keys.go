package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// APIKey is a per-user key added through the operator API, stored by the
// SHA-256 of the key (hex), never the key itself.
type APIKey struct {
	User   string
	Limit  Nanos    // 0: the default limit
	Groups []string // teams, for the budgets naming them
}

// KeyStore keeps keys added and revoked at run time, shared by every
// sidecar through the budget store.
type KeyStore interface {
	AddKey(ctx context.Context, sha256hex string, k APIKey) error
	RevokeKey(ctx context.Context, sha256hex string) error
	// Keys returns the added keys and the revoked digests.
	Keys(ctx context.Context) (added map[string]APIKey, revoked map[string]bool, err error)
}

// Both key sets share a hash tag: AddKey and RevokeKey change them in one
// transaction, which Redis Cluster allows only within one slot.
const (
	apiKeysKey     = "{apikeys}:added"
	revokedKeysKey = "{apikeys}:revoked"
)

func usersKey(day string) string { return "users:" + day }

// encodeKey writes a key's record: "limit<TAB>user" as before, or, with
// groups, JSON (which a record of the old form never starts with).
func encodeKey(k APIKey) string {
	if len(k.Groups) == 0 {
		return fmt.Sprintf("%d\t%s", int64(k.Limit), k.User)
	}
	b, _ := json.Marshal(keyRecord{User: k.User, Limit: int64(k.Limit), Groups: k.Groups})
	return string(b)
}

type keyRecord struct {
	User   string   `json:"user"`
	Limit  int64    `json:"limit_nanos"`
	Groups []string `json:"groups"`
}

func decodeKey(v string) (APIKey, bool) {
	if strings.HasPrefix(v, "{") {
		var r keyRecord
		if json.Unmarshal([]byte(v), &r) != nil || r.User == "" {
			return APIKey{}, false
		}
		return APIKey{User: r.User, Limit: Nanos(r.Limit), Groups: r.Groups}, true
	}
	limit, user, ok := strings.Cut(v, "\t")
	n, err := strconv.ParseInt(limit, 10, 64)
	if !ok || err != nil || user == "" {
		return APIKey{}, false
	}
	return APIKey{User: user, Limit: Nanos(n)}, true
}

func (r *RedisStore) AddKey(ctx context.Context, sha string, k APIKey) error {
	_, err := r.rdb.TxPipelined(ctx, func(p redisPipe) error {
		p.HSet(ctx, apiKeysKey, sha, encodeKey(k))
		p.SRem(ctx, revokedKeysKey, sha)
		return nil
	})
	if err != nil {
		return fmt.Errorf("add key: %w", err)
	}
	return nil
}

func (r *RedisStore) RevokeKey(ctx context.Context, sha string) error {
	_, err := r.rdb.TxPipelined(ctx, func(p redisPipe) error {
		p.HDel(ctx, apiKeysKey, sha)
		p.SAdd(ctx, revokedKeysKey, sha)
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	return nil
}

func (r *RedisStore) Keys(ctx context.Context) (map[string]APIKey, map[string]bool, error) {
	all, err := r.rdb.HGetAll(ctx, apiKeysKey).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("read keys: %w", err)
	}
	rev, err := r.rdb.SMembers(ctx, revokedKeysKey).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("read revoked keys: %w", err)
	}
	added := map[string]APIKey{}
	for sha, v := range all {
		if k, ok := decodeKey(v); ok {
			added[sha] = k
		}
	}
	revoked := map[string]bool{}
	for _, sha := range rev {
		revoked[sha] = true
	}
	return added, revoked, nil
}

// Users lists who has settled spend on day.
func (r *RedisStore) Users(ctx context.Context, day string) ([]string, error) {
	u, err := r.rdb.SMembers(ctx, usersKey(day)).Result()
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return u, nil
}

func (m *MemStore) AddKey(_ context.Context, sha string, k APIKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[sha] = k
	delete(m.revoked, sha)
	return nil
}

func (m *MemStore) RevokeKey(_ context.Context, sha string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keys, sha)
	m.revoked[sha] = true
	return nil
}

func (m *MemStore) Keys(context.Context) (map[string]APIKey, map[string]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	added, revoked := map[string]APIKey{}, map[string]bool{}
	for k, v := range m.keys {
		added[k] = v
	}
	for k := range m.revoked {
		revoked[k] = true
	}
	return added, revoked, nil
}

func (m *MemStore) Users(_ context.Context, day string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for u := range m.users[day] {
		out = append(out, u)
	}
	return out, nil
}
