package testenv

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testinfra"
	"github.com/aifirewall/aifirewall/providers"
)

// Stack is the whole path: client → envoy → fake upstream, with the sidecar
// on ext_proc and a real Redis behind it.
type Stack struct {
	UpstreamURL string // the fake upstream, as UPSTREAM_BASE_URL names it
	Redis       *testinfra.Redis
	RDB         *redis.Client
	Upstream    *fakellm.Server
	Sidecar     *Sidecar
	Envoy       *Envoy
}

// StackOptions tune a Stack.
type StackOptions struct {
	Limit        string   // DAILY_BUDGET_LIMIT, default 5.0
	UpstreamPath string   // base path of UPSTREAM_BASE_URL, e.g. "/api"
	Env          []string // more sidecar settings
	Envoy        envoy.Options
	Upstream     *fakellm.Server // nil: a new one
	UnixSocket   bool            // ext_proc over a Unix socket instead of loopback TCP
	// ProvidersFile, when set, configures the upstreams (PROVIDERS_FILE)
	// for the sidecar and Envoy alike; Upstream and UpstreamPath are unused.
	ProvidersFile string
}

// Keys used by every stack.
const (
	ClientKey   = "test-internal-key"
	UpstreamKey = "upstream-secret-key"
)

// StartStack starts Redis, the fake upstream, the sidecar and envoy.
func StartStack(t testing.TB, o StackOptions) *Stack {
	t.Helper()
	if o.Limit == "" {
		o.Limit = "5.0"
	}
	s := &Stack{Redis: testinfra.StartRedis(t)}
	s.RDB = redis.NewClient(&redis.Options{Addr: s.Redis.Addr()})
	t.Cleanup(func() { s.RDB.Close() })
	env := []string{"INTERNAL_API_KEY=" + ClientKey, "REDIS_URL=" + s.Redis.URL(), "DAILY_BUDGET_LIMIT=" + o.Limit}
	if o.ProvidersFile != "" {
		f, err := providers.Load(o.ProvidersFile)
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, "PROVIDERS_FILE="+o.ProvidersFile)
		o.Envoy.Providers = f.Providers
	} else {
		if o.Upstream == nil {
			o.Upstream = &fakellm.Server{}
		}
		s.Upstream = o.Upstream
		up := httptest.NewServer(s.Upstream)
		t.Cleanup(up.Close)
		s.UpstreamURL = up.URL + o.UpstreamPath
		env = append(env, "UPSTREAM_BASE_URL="+s.UpstreamURL, "UPSTREAM_API_KEY="+UpstreamKey, "UPSTREAM_PROVIDER=openai")
	}
	env = append(env, o.Env...)
	sock := ""
	if o.UnixSocket {
		sock = "unix:" + filepath.Join(t.TempDir(), "extproc.sock")
		env = append(env, "LISTEN_ADDR="+sock)
	}
	s.Sidecar = StartSidecar(t, env...)
	if sock != "" {
		s.Sidecar.GRPCAddr = sock
	}
	o.Envoy.UpstreamURL, o.Envoy.ExtProcAddr = s.UpstreamURL, s.Sidecar.GRPCAddr
	s.Envoy = StartEnvoyWith(t, o.Envoy)
	return s
}

// Spent reads a budget key as an integer (0 when absent).
func (s *Stack) Spent(t testing.TB, key string) int64 { return Spent(t, s.RDB, key) }

// WaitSpent waits until key holds want; see WaitSpent.
func (s *Stack) WaitSpent(t testing.TB, key string, want int64) { WaitSpent(t, s.RDB, key, want) }

// Spent reads a budget key of rdb as an integer (0 when absent).
func Spent(t testing.TB, rdb *redis.Client, key string) int64 {
	t.Helper()
	v, err := rdb.Get(context.Background(), key).Result()
	if err == redis.Nil {
		return 0
	}
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("%s holds %q, not an integer", key, v)
	}
	return n
}

// WaitSpent waits until key holds want (settlement is asynchronous), stays
// a moment to catch a double bill, and fails with the last value seen.
func WaitSpent(t testing.TB, rdb *redis.Client, key string, want int64) {
	t.Helper()
	var got int64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = Spent(t, rdb, key); got == want {
			time.Sleep(200 * time.Millisecond)
			if got = Spent(t, rdb, key); got == want {
				return
			}
			break
		}
	}
	t.Fatalf("%s = %d, want %d", key, got, want)
}
