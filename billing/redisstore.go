package billing

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

type redisPipe = redis.Pipeliner

// RedisStore keeps budgets in Redis, shared by every sidecar. Every key of
// one user carries the user's hash tag, so the scripts below touch a single
// Redis Cluster slot.
type RedisStore struct {
	rdb     redis.UniversalClient
	indexed userIndex
	ack     replicaAck
}

// replicaAck is how many replicas must hold a settlement before it counts
// as written (WAIT), and for how long to wait for them.
type replicaAck struct {
	replicas int
	timeout  time.Duration
}

// userIndex remembers who this process has written to a day's user index,
// so that a user's settlements after the first cost one round trip, not
// two. Bounded: past maxIndexed users a day, every settlement writes.
type userIndex struct {
	mu    sync.Mutex
	day   string
	users map[string]struct{}
}

const maxIndexed = 100_000

func (u *userIndex) has(day, user string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.users[user]
	return ok && u.day == day
}

func (u *userIndex) add(day, user string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.day != day || u.users == nil {
		u.day, u.users = day, map[string]struct{}{}
	}
	if len(u.users) < maxIndexed {
		u.users[user] = struct{}{}
	}
}

// NewRedisStore connects to Redis. url is one of
//
//	redis://[user:pass@]host:port/db          one server (rediss:// for TLS)
//	redis+sentinel://host:port?master_name=m  Sentinel (add &addr=host:port for more sentinels)
//	redis+cluster://host:port?addr=host:port  Cluster seed nodes
//
// with rediss+sentinel:// and rediss+cluster:// for TLS. It does not wait
// for Redis to answer: use Ping for that.
func NewRedisStore(url string, opts ...RedisOption) (*RedisStore, error) {
	var o redisOptions
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	tlsc := o.tls
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return nil, fmt.Errorf("%q is not a redis:// URL", redactURL(url))
	}
	base, mode, _ := strings.Cut(scheme, "+")
	if base != "redis" && base != "rediss" {
		return nil, fmt.Errorf("scheme %q is not redis or rediss", scheme)
	}
	plain := base + "://" + rest
	var rdb redis.UniversalClient
	switch mode {
	case "":
		opt, err := redis.ParseURL(plain)
		if err != nil {
			return nil, fmt.Errorf("parse redis URL: %w", err)
		}
		opt.TLSConfig = withCA(opt.TLSConfig, tlsc)
		rdb = redis.NewClient(opt)
	case "sentinel":
		opt, err := redis.ParseFailoverURL(plain)
		if err != nil {
			return nil, fmt.Errorf("parse sentinel URL: %w", err)
		}
		opt.TLSConfig = withCA(opt.TLSConfig, tlsc)
		rdb = redis.NewFailoverClient(opt)
	case "cluster":
		opt, err := redis.ParseClusterURL(plain)
		if err != nil {
			return nil, fmt.Errorf("parse cluster URL: %w", err)
		}
		opt.TLSConfig = withCA(opt.TLSConfig, tlsc)
		rdb = redis.NewClusterClient(opt)
	default:
		return nil, fmt.Errorf("scheme %q: want redis, redis+sentinel or redis+cluster", scheme)
	}
	return &RedisStore{rdb: rdb, ack: o.ack}, nil
}

// RedisOption adjusts how the store connects.
type RedisOption func(*redisOptions) error

type redisOptions struct {
	tls *tls.Config
	ack replicaAck
}

// WithReplicaAck makes a settlement count as written only once n replicas
// hold it (Redis's WAIT, within timeout); otherwise it is queued and
// retried like any failed write. With Sentinel, a settlement the old
// primary took but had not passed on when it died is then not lost at the
// failover: the retry lands on the new primary. Retries never double a
// bill: each request's settlement is applied once (its settled key).
func WithReplicaAck(n int, timeout time.Duration) RedisOption {
	return func(o *redisOptions) error {
		if n < 0 || (n > 0 && timeout <= 0) {
			return fmt.Errorf("replica acknowledgement: %d replicas within %s", n, timeout)
		}
		o.ack = replicaAck{replicas: n, timeout: timeout}
		return nil
	}
}

// WithCAFile trusts the CA certificates in file (PEM) for rediss:// URLs,
// for a Redis whose certificate a private CA signed.
func WithCAFile(file string) RedisOption {
	return func(o *redisOptions) error {
		if file == "" {
			return nil
		}
		pem, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("read Redis CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("Redis CA file %s holds no PEM certificate", file)
		}
		o.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		return nil
	}
}

// withCA applies the CA of opts to the TLS configuration a rediss:// URL
// produced (nil for plain redis://, which stays plain).
func withCA(url, opts *tls.Config) *tls.Config {
	if url == nil || opts == nil {
		return url
	}
	url.RootCAs = opts.RootCAs
	return url
}

// redactURL hides a password in a URL for error messages.
func redactURL(u string) string {
	if at := strings.LastIndexByte(u, '@'); at >= 0 {
		if s := strings.Index(u, "://"); s >= 0 && s < at {
			return u[:s+3] + "***" + u[at:]
		}
	}
	return u
}

// budgetScript purges expired reservations (in batches: Lua's unpack takes
// a few thousand values at most), reads the day, and with ARGV[5] ==
// "admit" reserves ARGV[2] for request ARGV[1] when spent + reserved <
// limit: ARGV[2], or with a ceiling ARGV[7] above it, half of what is
// free up to that ceiling (a stream that may be cut off reserves its room;
// see Admission.Ceiling); with "extend", it grows request ARGV[1]'s
// reservation by what is free: all of it when no other request holds one,
// else ARGV[2] or half of it, whichever is more, never past the ceiling
// (see Store.Extend). The total reserved is kept in KEYS[5] beside the reservations, so
// a check costs the same with ten open reservations or ten thousand; a day
// written before that key existed gets it summed once. The clock is
// Redis's, shared by all sidecars. Amounts stay below 2^53 nano-dollars,
// exact in Lua's numbers.
var budgetScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reserved = tonumber(redis.call('GET', KEYS[5]) or '-1')
if reserved < 0 then
  reserved = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[2])) do reserved = reserved + tonumber(v) end
end
while true do
  local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
  if #expired == 0 then break end
  for _, v in ipairs(redis.call('HMGET', KEYS[2], unpack(expired))) do
    if v then reserved = reserved - tonumber(v) end
  end
  redis.call('HDEL', KEYS[2], unpack(expired))
  redis.call('ZREM', KEYS[3], unpack(expired))
end
if reserved < 0 then reserved = 0 end
redis.call('SET', KEYS[5], reserved, 'EX', ARGV[6])
local limit = tonumber(redis.call('GET', KEYS[4]) or ARGV[3])
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
for i = 6, #KEYS do spent = spent + tonumber(redis.call('GET', KEYS[i]) or '0') end
if ARGV[5] == 'extend' then
  local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
  if held < 0 then return {0, limit, spent, reserved, 0} end
  local free = limit - spent - reserved
  local ceiling = tonumber(ARGV[7])
  local add = 0
  if free > 0 and ceiling > held then
    if redis.call('HLEN', KEYS[2]) == 1 then
      add = free
    else
      add = math.max(math.min(tonumber(ARGV[2]), free), math.floor(free / 2))
    end
    add = math.min(add, ceiling - held)
    redis.call('HSET', KEYS[2], ARGV[1], held + add)
    redis.call('SET', KEYS[5], reserved + add, 'EX', ARGV[6])
  end
  return {1, limit, spent, reserved + add, held + add}
end
if ARGV[5] ~= 'admit' then return {0, limit, spent, reserved, 0} end
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then return {1, limit, spent, reserved, tonumber(held)} end
if spent + reserved >= limit then return {0, limit, spent, reserved, 0} end
local amount = tonumber(ARGV[2])
local ceiling = tonumber(ARGV[7])
if ceiling > amount then
  amount = math.max(amount, math.min(ceiling, math.floor((limit - spent - reserved) / 2)))
end
redis.call('HSET', KEYS[2], ARGV[1], amount)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('SET', KEYS[5], reserved + amount, 'EX', ARGV[6])
return {1, limit, spent, reserved + amount, amount}`)

// renewScript moves a live reservation's expiry to now + ARGV[2] ms. XX:
// a reservation settled (or purged) meanwhile is not recreated.
var renewScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])`)

// settleScript replaces a reservation by the actual cost, once. A repeat
// refreshes the settled key: a write, so that WAIT after it waits for the
// first one too (replication is in order).
var settleScript = redis.NewScript(`
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  redis.call('HDEL', KEYS[2], ARGV[1])
  local left = tonumber(redis.call('GET', KEYS[5]) or '-1')
  if left >= 0 then
    redis.call('SET', KEYS[5], math.max(left - tonumber(held), 0), 'EX', ARGV[3])
  end
end
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('INCRBY', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 1
end
redis.call('EXPIRE', KEYS[4], ARGV[3])
return 0`)

func (r *RedisStore) run(ctx context.Context, user, day string, buckets []string, id string, amount, ceiling, limit Nanos, ttl time.Duration, mode string) (Budget, error) {
	spend := day
	if len(buckets) > 0 {
		spend = buckets[0]
	}
	keys := []string{BudgetKey(user, spend), reservedKey(user, day), expiryKey(user, day), limitKey(user), reservedSumKey(user, day)}
	// A rolling window's older buckets, summed with the current one: every
	// key has the user's hash tag, so one slot holds them all.
	for _, b := range buckets[min(1, len(buckets)):] {
		keys = append(keys, BudgetKey(user, b))
	}
	res, err := budgetScript.Run(ctx, r.rdb, keys, id, int64(amount), int64(limit), ttl.Milliseconds(), mode,
		int64(keyTTL.Seconds()), int64(ceiling)).Int64Slice()
	if err != nil {
		return Budget{}, err
	}
	if len(res) != 5 {
		return Budget{}, fmt.Errorf("budget script returned %d values", len(res))
	}
	return Budget{Admitted: res[0] == 1, Limit: Nanos(res[1]), Spent: Nanos(res[2]), Reserved: Nanos(res[3]), Held: Nanos(res[4])}, nil
}

func (r *RedisStore) Admit(ctx context.Context, a Admission) (Budget, error) {
	b, err := r.run(ctx, a.User, a.Day, a.Buckets, a.RequestID, a.Amount, a.Ceiling, a.Limit, a.TTL, "admit")
	if err != nil {
		return b, fmt.Errorf("admit %s: %w", a.RequestID, err)
	}
	return b, nil
}

func (r *RedisStore) Extend(ctx context.Context, a Admission) (Budget, error) {
	b, err := r.run(ctx, a.User, a.Day, a.Buckets, a.RequestID, a.Amount, a.Ceiling, a.Limit, a.TTL, "extend")
	if err != nil {
		return b, fmt.Errorf("extend %s: %w", a.RequestID, err)
	}
	return b, nil
}

func (r *RedisStore) Budget(ctx context.Context, user, day string, limit Nanos) (Budget, error) {
	return r.Window(ctx, user, day, nil, limit)
}

func (r *RedisStore) Window(ctx context.Context, user, day string, buckets []string, limit Nanos) (Budget, error) {
	b, err := r.run(ctx, user, day, buckets, "", 0, 0, limit, 0, "read")
	if err != nil {
		return b, fmt.Errorf("read budget: %w", err)
	}
	return b, nil
}

func (r *RedisStore) Settle(ctx context.Context, s Settlement) (bool, error) {
	keys := []string{BudgetKey(s.User, s.spendDay()), reservedKey(s.User, s.Day), expiryKey(s.User, s.Day), settledKey(s.User, s.RequestID),
		reservedSumKey(s.User, s.Day)}
	var n int
	var err error
	if r.ack.replicas > 0 {
		n, err = r.settleAcked(ctx, keys, s)
	} else {
		n, err = settleScript.Run(ctx, r.rdb, keys, s.RequestID, int64(s.Amount), int64(keyTTL.Seconds()), spendTTL(s)).Int()
	}
	if err != nil {
		return false, fmt.Errorf("settle %s: %w", s.RequestID, err)
	}
	if n == 1 && !r.indexed.has(s.Day, s.User) {
		// The day's user index lives in its own slot, outside the script;
		// it only serves listings, so a lost update costs nothing.
		pipe := r.rdb.Pipeline()
		pipe.SAdd(ctx, usersKey(s.Day), s.User)
		pipe.Expire(ctx, usersKey(s.Day), keyTTL)
		if _, err := pipe.Exec(ctx); err == nil {
			r.indexed.add(s.Day, s.User)
		}
	}
	return n == 1, nil
}

// spendTTL is how long (seconds) the spend key a settlement adds to lives.
func spendTTL(s Settlement) int64 {
	if s.Bucket != "" {
		return int64(bucketTTL.Seconds())
	}
	return int64(keyTTL.Seconds())
}

// settleAcked runs the settlement, then WAIT, on one connection (WAIT
// counts the replicas holding that connection's writes), even when the
// settlement was applied before: the script then writes anyway, so the
// retry waits for the first write too. It waits for as many replicas as
// asked or as the primary has: a primary promoted with none left takes
// settlements alone rather than refuse them all.
func (r *RedisStore) settleAcked(ctx context.Context, keys []string, s Settlement) (int, error) {
	client, ok := r.rdb.(*redis.Client)
	if !ok {
		return 0, errors.New("replica acknowledgement needs redis:// or redis+sentinel://")
	}
	conn := client.Conn()
	defer conn.Close()
	n, err := settleScript.Run(ctx, conn, keys, s.RequestID, int64(s.Amount), int64(keyTTL.Seconds()), spendTTL(s)).Int()
	if err != nil {
		return 0, err
	}
	role, err := conn.Do(ctx, "ROLE").Slice()
	if err != nil {
		return 0, err
	}
	need := r.ack.replicas
	if len(role) == 3 {
		if replicas, ok := role[2].([]any); ok {
			need = min(need, len(replicas))
		}
	}
	if need == 0 {
		return n, nil
	}
	got, err := conn.Do(ctx, "WAIT", need, r.ack.timeout.Milliseconds()).Int64()
	if err != nil {
		return 0, err
	}
	if got < int64(need) {
		return 0, fmt.Errorf("held by %d of %d replicas after %s; retried until it is", got, need, r.ack.timeout)
	}
	return n, nil
}

func (r *RedisStore) Renew(ctx context.Context, holds []Hold, ttl time.Duration) error {
	if len(holds) == 0 {
		return nil
	}
	if err := renewScript.Load(ctx, r.rdb).Err(); err != nil {
		return fmt.Errorf("renew reservations: %w", err)
	}
	pipe := r.rdb.Pipeline()
	for _, h := range holds {
		renewScript.EvalSha(ctx, pipe, []string{expiryKey(h.User, h.Day)}, h.RequestID, ttl.Milliseconds())
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("renew %d reservations: %w", len(holds), err)
	}
	return nil
}

func (r *RedisStore) SetLimit(ctx context.Context, user string, limit Nanos) error {
	var err error
	if limit <= 0 {
		err = r.rdb.Del(ctx, limitKey(user)).Err()
	} else {
		err = r.rdb.Set(ctx, limitKey(user), int64(limit), 0).Err()
	}
	if err != nil {
		return fmt.Errorf("set limit of %s: %w", user, err)
	}
	return nil
}

func (r *RedisStore) Ping(ctx context.Context) error { return r.rdb.Ping(ctx).Err() }
func (r *RedisStore) Close() error                   { return r.rdb.Close() }

// redisLog sends go-redis's own messages (connection-pool retries and the
// like) to the structured log at debug level: the sidecar says what an
// unreachable Redis means in one line of its own.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// LogRedisTo routes go-redis's logging through log. go-redis keeps its
// logger process-wide, so this is set once, at start.
func LogRedisTo(log *slog.Logger) { redis.SetLogger(redisLog{log}) }
