package billing

import (
	"context"
	"sync"
	"time"
)

// MemStore keeps budgets in this process: for local runs and tests. Budgets
// are lost on restart and not shared between sidecars.
type MemStore struct {
	mu       sync.Mutex
	now      func() time.Time
	spent    map[string]Nanos
	reserved map[string]map[string]reservation // by day key, then request id
	settled  map[string]bool
	limits   map[string]Nanos
	users    map[string]map[string]bool // by day
	keys     map[string]APIKey
	revoked  map[string]bool
	defs     map[string][]byte // budgets made through the operator API
}

type reservation struct {
	amount  Nanos
	expires time.Time
}

// NewMemStore returns an empty in-memory store.
func NewMemStore() *MemStore {
	return &MemStore{now: time.Now, spent: map[string]Nanos{}, reserved: map[string]map[string]reservation{},
		settled: map[string]bool{}, limits: map[string]Nanos{}, users: map[string]map[string]bool{},
		keys: map[string]APIKey{}, revoked: map[string]bool{}}
}

// open returns the live reservations of a day, dropping expired ones.
func (m *MemStore) open(user, day string) (map[string]reservation, Nanos) {
	key := reservedKey(user, day)
	rs := m.reserved[key]
	if rs == nil {
		rs = map[string]reservation{}
		m.reserved[key] = rs
	}
	var sum Nanos
	now := m.now()
	for id, r := range rs {
		if !now.Before(r.expires) {
			delete(rs, id)
			continue
		}
		sum += r.amount
	}
	return rs, sum
}

func (m *MemStore) budget(user, day string, buckets []string, limit Nanos) (Budget, map[string]reservation) {
	if l, ok := m.limits[user]; ok {
		limit = l
	}
	rs, reserved := m.open(user, day)
	if len(buckets) == 0 {
		buckets = []string{day}
	}
	var spent Nanos
	for _, b := range buckets {
		spent += m.spent[BudgetKey(user, b)]
	}
	return Budget{Limit: limit, Spent: spent, Reserved: reserved}, rs
}

func (m *MemStore) Admit(_ context.Context, a Admission) (Budget, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, rs := m.budget(a.User, a.Day, a.Buckets, a.Limit)
	if r, dup := rs[a.RequestID]; dup {
		b.Admitted, b.Held = true, r.amount
		return b, nil
	}
	if b.Spent+b.Reserved >= b.Limit {
		return b, nil
	}
	amount := a.Amount
	if a.Ceiling > amount {
		amount = max(amount, min(a.Ceiling, (b.Limit-b.Spent-b.Reserved)/2))
	}
	rs[a.RequestID] = reservation{amount: amount, expires: m.now().Add(a.TTL)}
	b.Admitted, b.Reserved, b.Held = true, b.Reserved+amount, amount
	return b, nil
}

func (m *MemStore) Extend(_ context.Context, a Admission) (Budget, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, rs := m.budget(a.User, a.Day, a.Buckets, a.Limit)
	r, ok := rs[a.RequestID]
	if !ok {
		return b, nil
	}
	free := b.Limit - b.Spent - b.Reserved
	if free > 0 && a.Ceiling > r.amount {
		add := free
		if len(rs) > 1 {
			add = max(min(a.Amount, free), free/2)
		}
		add = min(add, a.Ceiling-r.amount)
		r.amount += add
		rs[a.RequestID] = r
		b.Reserved += add
	}
	b.Admitted, b.Held = true, r.amount
	return b, nil
}

func (m *MemStore) Settle(_ context.Context, s Settlement) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.reserved[reservedKey(s.User, s.Day)], s.RequestID)
	id := settledKey(s.User, s.RequestID)
	if m.settled[id] {
		return false, nil
	}
	m.settled[id] = true
	m.spent[BudgetKey(s.User, s.spendDay())] += s.Amount
	if m.users[s.Day] == nil {
		m.users[s.Day] = map[string]bool{}
	}
	m.users[s.Day][s.User] = true
	return true, nil
}

func (m *MemStore) Renew(_ context.Context, holds []Hold, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, h := range holds {
		rs := m.reserved[reservedKey(h.User, h.Day)]
		if r, ok := rs[h.RequestID]; ok && now.Before(r.expires) {
			r.expires = now.Add(ttl)
			rs[h.RequestID] = r
		}
	}
	return nil
}

func (m *MemStore) Budget(ctx context.Context, user, day string, limit Nanos) (Budget, error) {
	return m.Window(ctx, user, day, nil, limit)
}

func (m *MemStore) Window(_ context.Context, user, day string, buckets []string, limit Nanos) (Budget, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, _ := m.budget(user, day, buckets, limit)
	return b, nil
}

func (m *MemStore) SetLimit(_ context.Context, user string, limit Nanos) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if limit <= 0 {
		delete(m.limits, user)
	} else {
		m.limits[user] = limit
	}
	return nil
}

func (m *MemStore) Ping(context.Context) error { return nil }
func (m *MemStore) Close() error               { return nil }
