package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/provider"
)

func TestDefaultsAreTheSeeds(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.InternalAPIKey != "changeme-internal-key" || c.UpstreamBaseURL != "https://openrouter.ai/api" ||
		c.RedisURL != "redis://redis:6379/0" || c.Limit != 5*billing.NanosPerUSD ||
		c.ListenAddr != "127.0.0.1:50051" || c.AdminAddr != ":9090" || c.Provider != provider.OpenRouter || c.IdentityMode != "shared" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	cases := map[string]string{
		"DAILY_BUDGET_LIMIT": "five", "BUDGET_TIMEZONE": "Mars/Olympus", "UPSTREAM_BASE_URL": "ftp://x",
		"UPSTREAM_PROVIDER": "acme", "BUDGET_STORE": "disk", "LISTEN_ADDR": "50051", "REDIS_TIMEOUT": "soon",
		"LOG_LEVEL": "loud", "IDENTITY_MODE": "trust-me", "ADMIN_TOKEN": "short", "MAX_REQUEST_BODY_BYTES": "-1",
		"FALLBACK_INPUT_PRICE_PER_MTOK": "cheap", "RESERVATION_TTL": "0s", "EXTPROC_ADDR": "unix:relative.sock",
		"ADMIN_ADDR": "unix:/run/admin.sock", "ENVOY_ADMIN_URL": "http://10.0.0.5:9901", "SHUTDOWN_MIN_DRAIN": "1h",
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, value)
			_, err := Load("")
			if err == nil || !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestEnvFileAndPrecedence(t *testing.T) {
	f := filepath.Join(t.TempDir(), ".env")
	os.WriteFile(f, []byte("DAILY_BUDGET_LIMIT=2.5\nUPSTREAM_BASE_URL=https://api.anthropic.com\nKEYS_FILE=/etc/keys.yaml\n"), 0o600)
	t.Setenv("DAILY_BUDGET_LIMIT", "7")
	c, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	if c.Limit != 7*billing.NanosPerUSD {
		t.Errorf("environment must win over .env: limit %s", c.Limit)
	}
	if c.Provider != provider.Anthropic || c.IdentityMode != "keys" {
		t.Errorf("provider %s, identity %s", c.Provider, c.IdentityMode)
	}
	os.Unsetenv("UPSTREAM_BASE_URL")
	os.Unsetenv("KEYS_FILE")
}

// The sidecar and Envoy in one pod can share a Unix socket for ext_proc.
func TestUnixSocketAddresses(t *testing.T) {
	t.Setenv("LISTEN_ADDR", "unix:/run/aifirewall/extproc.sock")
	t.Setenv("EXTPROC_ADDR", "unix:/run/aifirewall/extproc.sock")
	c, err := Load("")
	if err != nil || c.ListenAddr != "unix:/run/aifirewall/extproc.sock" || c.ExtProcAddr != c.ListenAddr {
		t.Fatalf("config %+v, %v", c, err)
	}
}

func TestProvidersFile(t *testing.T) {
	t.Setenv("PROVIDERS_FILE", "../deploy/providers.example.yaml")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Providers == nil || len(c.Providers.Providers) != 3 {
		t.Fatalf("providers: %+v", c.Providers)
	}
	// One reading: the shorthand and the file never mix.
	t.Setenv("UPSTREAM_API_KEY", "sk-something")
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "PROVIDERS_FILE and UPSTREAM_API_KEY are both set") ||
		strings.Contains(err.Error(), "sk-something") {
		t.Fatalf("both set: %v", err)
	}
	t.Setenv("UPSTREAM_API_KEY", "")
	bad := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(bad, []byte("providers:\n  - name: x\n    formt: openai\n"), 0o600)
	t.Setenv("PROVIDERS_FILE", bad)
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "PROVIDERS_FILE: "+bad+":3: unknown field \"formt\"") {
		t.Fatalf("bad file: %v", err)
	}
}

// The ext_proc port answers anyone who can reach it: beyond loopback or a
// Unix socket it needs mutual TLS, or a mesh that authenticates callers.
func TestExtProcListenerMustBeLocalOrAuthenticated(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string // "" accepted
	}{
		{map[string]string{}, ""},
		{map[string]string{"LISTEN_ADDR": "unix:/run/aifirewall/extproc.sock"}, ""},
		{map[string]string{"LISTEN_ADDR": "[::1]:50051"}, ""},
		{map[string]string{"LISTEN_ADDR": "localhost:50051"}, ""},
		{map[string]string{"LISTEN_ADDR": ":50051"}, "LISTEN_ADDR"},
		{map[string]string{"LISTEN_ADDR": "0.0.0.0:50051"}, "LISTEN_ADDR"},
		{map[string]string{"LISTEN_ADDR": "10.0.0.5:50051"}, "LISTEN_ADDR"},
		{map[string]string{"LISTEN_ADDR": "0.0.0.0:50051", "EXTPROC_AUTHENTICATED_BY_MESH": "true"}, ""},
		{map[string]string{"LISTEN_ADDR": "0.0.0.0:50051", "EXTPROC_TLS_CERT_FILE": "/c", "EXTPROC_TLS_KEY_FILE": "/k",
			"EXTPROC_TLS_CLIENT_CA_FILE": "/ca", "EXTPROC_TLS_ALLOWED_CLIENTS": "spiffe://x/*,gw.test"}, ""},
		{map[string]string{"LISTEN_ADDR": "0.0.0.0:50051", "EXTPROC_TLS_CERT_FILE": "/c", "EXTPROC_TLS_KEY_FILE": "/k",
			"EXTPROC_TLS_CLIENT_CA_FILE": "/ca"}, "EXTPROC_TLS_ALLOWED_CLIENTS"},
		{map[string]string{"LISTEN_ADDR": "unix:/s.sock", "EXTPROC_TLS_CERT_FILE": "/c", "EXTPROC_TLS_KEY_FILE": "/k",
			"EXTPROC_TLS_CLIENT_CA_FILE": "/ca", "EXTPROC_TLS_ALLOWED_CLIENTS": "x"}, "Unix socket"},
		{map[string]string{"ENVOY_EXTPROC_TLS_CERT_FILE": "/c"}, "ENVOY_EXTPROC_TLS_"},
	} {
		for k, v := range c.env {
			t.Setenv(k, v)
		}
		cfg, err := Load("")
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v: %v", c.env, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v: err = %v, want it to name %s", c.env, err, c.want)
		case c.want == "" && c.env["EXTPROC_TLS_ALLOWED_CLIENTS"] != "" && len(cfg.ExtProcClients) != 2:
			t.Errorf("allowed clients: %q", cfg.ExtProcClients)
		}
		for k := range c.env {
			os.Unsetenv(k)
		}
	}
}
