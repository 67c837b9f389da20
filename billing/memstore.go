package billing

import (
	"context"
	"sync"
)

// MemStore keeps budgets in this process: for local runs and tests. Budgets
// are lost on restart and not shared between sidecars.
type MemStore struct {
	mu      sync.Mutex
	spent   map[string]Nanos
	settled map[string]bool
}

// NewMemStore returns an empty in-memory store.
func NewMemStore() *MemStore {
	return &MemStore{spent: map[string]Nanos{}, settled: map[string]bool{}}
}

func (m *MemStore) Spent(_ context.Context, user, day string) (Nanos, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.spent[BudgetKey(user, day)], nil
}

func (m *MemStore) Settle(_ context.Context, s Settlement) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := settledKey(s.User, s.RequestID)
	if m.settled[id] {
		return false, nil
	}
	m.settled[id] = true
	m.spent[BudgetKey(s.User, s.Day)] += s.Amount
	return true, nil
}

func (m *MemStore) Ping(context.Context) error { return nil }
func (m *MemStore) Close() error               { return nil }
