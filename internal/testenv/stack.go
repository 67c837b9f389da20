package testenv

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testinfra"
	"github.com/aifirewall/aifirewall/processor/provider"
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
	Relay       *Relay // nil with DirectExtProc
	Envoy       *Envoy
}

// StackOptions tune a Stack.
type StackOptions struct {
	Limit        string   // DAILY_BUDGET_LIMIT, default 5.0
	UpstreamPath string   // base path of UPSTREAM_BASE_URL, e.g. "/api"
	Env          []string // more sidecar settings
	Envoy        envoy.Options
	Upstream     *fakellm.Server // nil: a new one
	// UpstreamURL, when set, is an upstream running elsewhere (a
	// FakeProvider process); Upstream is unused.
	UpstreamURL string
	UnixSocket  bool // ext_proc over a Unix socket instead of loopback TCP
	// ProvidersFile, when set, configures the upstreams (PROVIDERS_FILE)
	// for the sidecar and Envoy alike; Upstream and UpstreamPath are unused.
	ProvidersFile string
	// EnvoyEnv is added to Envoy's environment: the provider keys the
	// providers file names with api_key_env. The sidecar never gets them.
	EnvoyEnv []string
	// DirectExtProc connects Envoy to the sidecar itself, without the Relay
	// that checks every ext_proc message for provider keys (benchmarks).
	DirectExtProc bool
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
	envoyEnv := append([]string{}, o.EnvoyEnv...)
	var secrets []string
	if o.ProvidersFile != "" {
		f, err := providers.Load(o.ProvidersFile)
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, "PROVIDERS_FILE="+o.ProvidersFile)
		o.Envoy.Providers = f.Providers
		secrets = providerKeys(t, f.Providers, envoyEnv)
	} else {
		if o.UpstreamURL != "" {
			s.UpstreamURL = o.UpstreamURL + o.UpstreamPath
		} else {
			if o.Upstream == nil {
				o.Upstream = &fakellm.Server{}
			}
			s.Upstream = o.Upstream
			up := httptest.NewServer(s.Upstream)
			t.Cleanup(up.Close)
			s.UpstreamURL = up.URL + o.UpstreamPath
		}
		env = append(env, "UPSTREAM_BASE_URL="+s.UpstreamURL, "UPSTREAM_PROVIDER=openai")
		// Envoy holds the key; the sidecar does not have it.
		envoyEnv = append(envoyEnv, "UPSTREAM_API_KEY="+UpstreamKey)
		o.Envoy.UpstreamKeyEnv, secrets = "UPSTREAM_API_KEY", []string{UpstreamKey}
	}
	env = append(env, o.Env...)
	if o.Envoy.UpstreamKind == "" {
		o.Envoy.UpstreamKind = provider.OpenAI
		if k := lastValue(env, "UPSTREAM_PROVIDER"); k != "" {
			o.Envoy.UpstreamKind = provider.Kind(k)
		}
	}
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
	if !o.DirectExtProc && o.Envoy.ExtProcTLS.CertFile == "" {
		s.Relay = StartRelay(t, s.Sidecar.GRPCAddr, secrets)
		o.Envoy.ExtProcAddr = s.Relay.Addr
	}
	s.Envoy = StartEnvoyWith(t, o.Envoy, envoyEnv...)
	return s
}

// providerKeys are the keys of ps, from env (KEY=value) or the process's
// environment, and from their files.
func providerKeys(t testing.TB, ps []providers.Provider, env []string) []string {
	t.Helper()
	var keys []string
	for _, p := range ps {
		switch {
		case p.APIKeyEnv != "":
			k := lastValue(env, p.APIKeyEnv)
			if k == "" {
				k = os.Getenv(p.APIKeyEnv)
			}
			keys = append(keys, k)
		case p.APIKeyFile != "":
			k, err := providers.ReadKeyFile(p.APIKeyFile)
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
	}
	return keys
}

// lastValue is the value of the last name=value in env.
func lastValue(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val
		}
	}
	return v
}

// Spent reads a budget key as an integer (0 when absent).
func (s *Stack) Spent(t testing.TB, key string) int64 { return Spent(t, s.RDB, key) }

// WaitSpent waits until key holds want; see WaitSpent.
func (s *Stack) WaitSpent(t testing.TB, key string, want int64) { WaitSpent(t, s.RDB, key, want) }

// Spent reads a budget key of rdb as an integer (0 when absent).
func Spent(t testing.TB, rdb redis.Cmdable, key string) int64 {
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
func WaitSpent(t testing.TB, rdb redis.Cmdable, key string, want int64) {
	t.Helper()
	WaitSpentWithin(t, rdb, key, want, 10*time.Second)
}

// WaitSpentWithin is WaitSpent waiting up to d (a spool replayed after an
// outage).
func WaitSpentWithin(t testing.TB, rdb redis.Cmdable, key string, want int64, d time.Duration) {
	t.Helper()
	var got int64
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
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
