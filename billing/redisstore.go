package billing

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// RedisStore keeps budgets in Redis, shared by every sidecar.
type RedisStore struct {
	rdb redis.UniversalClient
}

// NewRedisStore connects to the Redis at url (redis:// or rediss://). It
// does not wait for Redis to answer: use Ping for that.
func NewRedisStore(url string) (*RedisStore, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parse REDIS_URL: %w", err)
	}
	return &RedisStore{rdb: redis.NewClient(opt)}, nil
}

// settle marks the request settled and adds its amount in one atomic step,
// so a retry after a lost reply cannot bill twice.
var settle = redis.NewScript(`
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`)

func (r *RedisStore) Spent(ctx context.Context, user, day string) (Nanos, error) {
	v, err := r.rdb.Get(ctx, BudgetKey(user, day)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read spend: %w", err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("spend of %s is not an integer: %w", user, err)
	}
	return Nanos(n), nil
}

func (r *RedisStore) Settle(ctx context.Context, s Settlement) (bool, error) {
	keys := []string{BudgetKey(s.User, s.Day), settledKey(s.User, s.RequestID)}
	n, err := settle.Run(ctx, r.rdb, keys, int64(s.Amount), int64(keyTTL.Seconds())).Int()
	if err != nil {
		return false, fmt.Errorf("settle %s: %w", s.RequestID, err)
	}
	return n == 1, nil
}

func (r *RedisStore) Ping(ctx context.Context) error { return r.rdb.Ping(ctx).Err() }
func (r *RedisStore) Close() error                   { return r.rdb.Close() }
