package billing

import (
	"context"
	"fmt"
)

// BudgetDefStore keeps the budgets made through the operator API, by name
// (their definitions as JSON), shared by every sidecar through the store.
type BudgetDefStore interface {
	PutBudgetDef(ctx context.Context, name string, def []byte) error
	DeleteBudgetDef(ctx context.Context, name string) (bool, error)
	BudgetDefs(ctx context.Context) (map[string][]byte, error)
}

// One hash: a budget's definition changes in one write.
const budgetDefsKey = "{budgets}:defs"

func (r *RedisStore) PutBudgetDef(ctx context.Context, name string, def []byte) error {
	if err := r.rdb.HSet(ctx, budgetDefsKey, name, def).Err(); err != nil {
		return fmt.Errorf("put budget %s: %w", name, err)
	}
	return nil
}

func (r *RedisStore) DeleteBudgetDef(ctx context.Context, name string) (bool, error) {
	n, err := r.rdb.HDel(ctx, budgetDefsKey, name).Result()
	if err != nil {
		return false, fmt.Errorf("delete budget %s: %w", name, err)
	}
	return n == 1, nil
}

func (r *RedisStore) BudgetDefs(ctx context.Context) (map[string][]byte, error) {
	all, err := r.rdb.HGetAll(ctx, budgetDefsKey).Result()
	if err != nil {
		return nil, fmt.Errorf("read budgets: %w", err)
	}
	out := make(map[string][]byte, len(all))
	for k, v := range all {
		out[k] = []byte(v)
	}
	return out, nil
}

func (m *MemStore) PutBudgetDef(_ context.Context, name string, def []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.defs == nil {
		m.defs = map[string][]byte{}
	}
	m.defs[name] = append([]byte(nil), def...)
	return nil
}

func (m *MemStore) DeleteBudgetDef(_ context.Context, name string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.defs[name]
	delete(m.defs, name)
	return ok, nil
}

func (m *MemStore) BudgetDefs(context.Context) (map[string][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string][]byte, len(m.defs))
	for k, v := range m.defs {
		out[k] = append([]byte(nil), v...)
	}
	return out, nil
}
