// Package config reads the sidecar's settings from the environment (and a
// .env file), the seed's variable names and defaults included.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/joho/godotenv"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/provider"
	"github.com/aifirewall/aifirewall/providers"
)

// DefaultAPIKey is the seed's default client key; running with it logs a warning.
const DefaultAPIKey = "changeme-internal-key"

// Config is every setting, parsed and checked.
type Config struct {
	InternalAPIKey   string `env:"INTERNAL_API_KEY" envDefault:"changeme-internal-key"`
	UpstreamBaseURL  string `env:"UPSTREAM_BASE_URL" envDefault:"https://openrouter.ai/api"`
	UpstreamAPIKey   string `env:"UPSTREAM_API_KEY"`
	UpstreamProvider string `env:"UPSTREAM_PROVIDER"`
	// PROVIDERS_FILE lists several providers, their routes and the egress
	// policy; it replaces the UPSTREAM_* one-provider shorthand.
	ProvidersFile string `env:"PROVIDERS_FILE"`
	RedisURL      string `env:"REDIS_URL" envDefault:"redis://redis:6379/0"`
	RedisCAFile   string `env:"REDIS_CA_FILE"`
	// BudgetStore: "redis" (production), "memory" (this process only) or
	// "auto" (Redis when it answers at start, else memory, with a warning).
	BudgetStore      string `env:"BUDGET_STORE" envDefault:"redis"`
	DailyBudgetLimit string `env:"DAILY_BUDGET_LIMIT" envDefault:"5.0"`
	BudgetTimezone   string `env:"BUDGET_TIMEZONE" envDefault:"UTC"`
	// LISTEN_ADDR: loopback by default. Whoever speaks ext_proc admits
	// requests and names identities, so the port answers only its own Envoy.
	ListenAddr string `env:"LISTEN_ADDR" envDefault:"127.0.0.1:50051"`
	// Mutual TLS on the ext_proc port, required when it listens beyond
	// loopback: the server's certificate, the CA of allowed clients, and
	// their identities (URI or DNS SANs, "*" matching any run).
	ExtProcTLSCert  string   `env:"EXTPROC_TLS_CERT_FILE"`
	ExtProcTLSKey   string   `env:"EXTPROC_TLS_KEY_FILE"`
	ExtProcClientCA string   `env:"EXTPROC_TLS_CLIENT_CA_FILE"`
	ExtProcClients  []string `env:"EXTPROC_TLS_ALLOWED_CLIENTS" envSeparator:","`
	// EXTPROC_AUTHENTICATED_BY_MESH: a service mesh's proxy in front of the
	// port authenticates callers (Istio mTLS and an AuthorizationPolicy), so
	// plain gRPC on a pod address is allowed.
	ExtProcByMesh bool `env:"EXTPROC_AUTHENTICATED_BY_MESH" envDefault:"false"`
	// PROVIDER_KEYS_IN_EXTPROC: the sidecar reads provider keys and sends
	// them in its ext_proc replies, for the one deployment with no proxy of
	// its own to put them on (Istio's every-sidecar variant).
	ProviderKeysInExtProc bool          `env:"PROVIDER_KEYS_IN_EXTPROC" envDefault:"false"`
	AdminAddr             string        `env:"ADMIN_ADDR" envDefault:":9090"`
	PricingFile           string        `env:"PRICING_FILE"`
	FallbackInput         string        `env:"FALLBACK_INPUT_PRICE_PER_MTOK" envDefault:"10"`
	FallbackOutput        string        `env:"FALLBACK_OUTPUT_PRICE_PER_MTOK" envDefault:"30"`
	RedisTimeout          time.Duration `env:"REDIS_TIMEOUT" envDefault:"1s"`
	// A settlement counts as written once this many replicas hold it
	// (Sentinel: nothing the old primary took is lost at a failover).
	RedisWaitReplicas int           `env:"REDIS_WAIT_REPLICAS" envDefault:"0"`
	RedisWaitTimeout  time.Duration `env:"REDIS_WAIT_TIMEOUT" envDefault:"500ms"`
	ShutdownTimeout   time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s"`
	// At SIGTERM the sidecar keeps answering its Envoy at least this long
	// (for load balancers to stop sending to it), then until Envoy has no
	// request left; with ENVOY_ADMIN_URL it drains that Envoy first and
	// ends it once empty.
	ShutdownMinDrain time.Duration `env:"SHUTDOWN_MIN_DRAIN" envDefault:"5s"`
	EnvoyAdminURL    string        `env:"ENVOY_ADMIN_URL"`
	MaxBodyBytes     uint32        `env:"MAX_REQUEST_BODY_BYTES" envDefault:"8388608"`
	ReservationTTL   time.Duration `env:"RESERVATION_TTL" envDefault:"15m"`
	// FAIL_MODE: "closed" refuses requests (503) while the budget store is
	// unreachable; "open" forwards them unchecked and bills them later.
	FailMode  string `env:"FAIL_MODE" envDefault:"closed"`
	SpoolFile string `env:"SPOOL_FILE" envDefault:"spool/settlements.jsonl"`
	// LEDGER_URL: the durable record of every settled request
	// (sqlite:///path/ledger.db); empty: none. Its spool sits beside
	// SPOOL_FILE.
	LedgerURL     string `env:"LEDGER_URL"`
	SpoolMax      int    `env:"SPOOL_MAX" envDefault:"100000"`
	DefaultOutput int64  `env:"DEFAULT_OUTPUT_TOKENS" envDefault:"1024"`
	// STREAM_CUTOFF: a stream that would pass the daily budget is ended
	// (its room reserved at admission), and a request that is not
	// streamed reserves its whole output bound. Off: the daily budget
	// may be passed by one request, as budgets with cutoff: false.
	StreamCutoff bool `env:"STREAM_CUTOFF" envDefault:"true"`
	// Identity: "shared" (INTERNAL_API_KEY, user from x-user-id / body),
	// "keys" (per-user keys in KEYS_FILE) or "mesh" (SPIFFE ID of the
	// client certificate) or "jwt" (a token of the identity provider, as
	// Envoy's jwt_authn verified it). Empty: "keys" when KEYS_FILE is set,
	// else "shared".
	IdentityMode string `env:"IDENTITY_MODE"`
	// IDENTITY_MODE=jwt: what Envoy checks (issuer, audiences, the
	// provider's keys as a JWKS file) and which claims name the caller and
	// its groups (dotted names reach nested claims).
	JWTIssuer      string   `env:"JWT_ISSUER"`
	JWTAudiences   []string `env:"JWT_AUDIENCES" envSeparator:","`
	JWTJWKSFile    string   `env:"JWT_JWKS_FILE"`
	JWTJWKSURL     string   `env:"JWT_JWKS_URL"`
	JWTUserClaim   string   `env:"JWT_USER_CLAIM" envDefault:"sub"`
	JWTGroupsClaim string   `env:"JWT_GROUPS_CLAIM" envDefault:"groups"`
	// The operator API (gRPC), served only when ADMIN_TOKEN is set.
	OperatorAddr string `env:"OPERATOR_ADDR" envDefault:":9091"`
	AdminToken   string `env:"ADMIN_TOKEN"`
	KeysFile     string `env:"KEYS_FILE"`
	// BUDGETS_FILE: budgets beyond the default daily one (teams, months,
	// models, audit), re-read when it changes.
	BudgetsFile string `env:"BUDGETS_FILE"`
	// MESH_GROUPS: IDENTITY_MODE=mesh, SPIFFE IDs to groups, as
	// pattern=group pairs ("{namespace}": the ID's Kubernetes namespace).
	MeshGroups     []string `env:"MESH_GROUPS" envSeparator:","`
	TrustXFCC      bool     `env:"TRUST_XFCC" envDefault:"false"`
	LogLevel       string   `env:"LOG_LEVEL" envDefault:"info"`
	MetricsPerUser bool     `env:"METRICS_PER_USER" envDefault:"false"`

	// Settings of the generated Envoy configuration.
	// ENVOY_EXTPROC_TLS_*: Envoy's client certificate towards a sidecar
	// across a network, the CA that signed the sidecar's, and the name the
	// sidecar's certificate must carry.
	EnvoyExtProcCert   string `env:"ENVOY_EXTPROC_TLS_CERT_FILE"`
	EnvoyExtProcKey    string `env:"ENVOY_EXTPROC_TLS_KEY_FILE"`
	EnvoyExtProcCA     string `env:"ENVOY_EXTPROC_TLS_CA_FILE"`
	EnvoyExtProcServer string `env:"ENVOY_EXTPROC_TLS_SERVER_NAME"`
	// ENVOY_MAX_*: what one Envoy holds open (envoy.Limits); 0: the defaults.
	EnvoyMaxStreams     uint32 `env:"ENVOY_MAX_STREAMS" envDefault:"10000"`
	EnvoyMaxConnections uint64 `env:"ENVOY_MAX_DOWNSTREAM_CONNECTIONS" envDefault:"10000"`
	EnvoyMaxHeapBytes   uint64 `env:"ENVOY_MAX_HEAP_BYTES" envDefault:"0"`
	EnvoyTLSCert        string `env:"ENVOY_TLS_CERT_FILE"`
	EnvoyTLSKey         string `env:"ENVOY_TLS_KEY_FILE"`
	EnvoyClientCA       string `env:"ENVOY_CLIENT_CA_FILE"`
	EnvoyListenAddr     string `env:"ENVOY_LISTEN_ADDR" envDefault:"0.0.0.0:8000"`
	EnvoyAdminAddr      string `env:"ENVOY_ADMIN_ADDR" envDefault:"127.0.0.1:9901"`
	// ENVOY_HEALTH_ADDR: a listener serving only GET /ready (probes).
	EnvoyHealthAddr string `env:"ENVOY_HEALTH_ADDR"`
	ExtProcAddr     string `env:"EXTPROC_ADDR" envDefault:"127.0.0.1:50051"`

	// Derived.
	Limit     billing.Nanos
	Location  *time.Location
	Provider  provider.Kind
	Providers *providers.File // nil: the UPSTREAM_* shorthand
	Fallback  billing.Price
	Level     slog.Level
	UsedFiles []string
}

// Load reads envFile when it exists (variables already set win), then the
// environment. Errors name the variable and what is wrong with it.
func Load(envFile string) (*Config, error) {
	var files []string
	if envFile != "" {
		if _, err := os.Stat(envFile); err == nil {
			if err := godotenv.Load(envFile); err != nil {
				return nil, fmt.Errorf("%s: %w", envFile, err)
			}
			files = append(files, envFile)
		}
	}
	var c Config
	if err := env.Parse(&c); err != nil {
		return nil, firstError(err)
	}
	c.UsedFiles = files
	return &c, c.derive()
}

func (c *Config) derive() error {
	var err error
	if c.Limit, err = billing.ParseUSD(c.DailyBudgetLimit); err != nil {
		return fmt.Errorf("DAILY_BUDGET_LIMIT: %v (want dollars, e.g. 5.0)", err)
	}
	if c.Location, err = time.LoadLocation(c.BudgetTimezone); err != nil {
		return fmt.Errorf("BUDGET_TIMEZONE: %q is not an IANA time zone (e.g. UTC, Europe/Paris)", c.BudgetTimezone)
	}
	if c.ProvidersFile != "" {
		for _, name := range []string{"UPSTREAM_BASE_URL", "UPSTREAM_API_KEY", "UPSTREAM_PROVIDER"} {
			if os.Getenv(name) != "" {
				return fmt.Errorf("PROVIDERS_FILE and %s are both set: the providers file names every upstream and its key; unset %s", name, name)
			}
		}
		if c.Providers, err = providers.Load(c.ProvidersFile); err != nil {
			return fmt.Errorf("PROVIDERS_FILE: %w", err)
		}
	}
	u, err := url.Parse(c.UpstreamBaseURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("UPSTREAM_BASE_URL: %q must be an http:// or https:// URL", providers.Redact(c.UpstreamBaseURL))
	}
	if c.Provider, err = provider.ParseKind(c.UpstreamProvider, c.UpstreamBaseURL); err != nil {
		return fmt.Errorf("UPSTREAM_PROVIDER: %v", err)
	}
	if c.InternalAPIKey == "" {
		return errors.New("INTERNAL_API_KEY: must not be empty")
	}
	switch c.BudgetStore {
	case "redis", "memory", "auto":
	default:
		return fmt.Errorf("BUDGET_STORE: %q is not one of redis, memory, auto", c.BudgetStore)
	}
	if c.BudgetStore != "memory" {
		if _, err := url.Parse(c.RedisURL); err != nil || !strings.HasPrefix(c.RedisURL, "redis") {
			return fmt.Errorf("REDIS_URL: %q must be a redis:// or rediss:// URL", c.RedisURL)
		}
	}
	for name, addr := range map[string]string{"LISTEN_ADDR": c.ListenAddr, "ADMIN_ADDR": c.AdminAddr,
		"ENVOY_LISTEN_ADDR": c.EnvoyListenAddr, "OPERATOR_ADDR": c.OperatorAddr, "ENVOY_ADMIN_ADDR": c.EnvoyAdminAddr, "EXTPROC_ADDR": c.ExtProcAddr, "ENVOY_HEALTH_ADDR": c.EnvoyHealthAddr} {
		if addr == "" && name == "ENVOY_HEALTH_ADDR" {
			continue
		}
		if path, ok := strings.CutPrefix(addr, "unix:"); ok && (name == "LISTEN_ADDR" || name == "EXTPROC_ADDR") {
			if !strings.HasPrefix(path, "/") {
				return fmt.Errorf("%s: %q: a Unix socket needs an absolute path, e.g. unix:/run/aifirewall/extproc.sock", name, addr)
			}
			continue
		}
		_, port, err := net.SplitHostPort(addr)
		if _, perr := strconv.ParseUint(port, 10, 16); err != nil || perr != nil {
			return fmt.Errorf("%s: %q is not host:port", name, addr)
		}
	}
	if c.Fallback.Input, err = billing.ParsePerMTok(c.FallbackInput); err != nil {
		return fmt.Errorf("FALLBACK_INPUT_PRICE_PER_MTOK: %v", err)
	}
	if c.Fallback.Output, err = billing.ParsePerMTok(c.FallbackOutput); err != nil {
		return fmt.Errorf("FALLBACK_OUTPUT_PRICE_PER_MTOK: %v", err)
	}
	if err := c.Level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("LOG_LEVEL: %q is not debug, info, warn or error", c.LogLevel)
	}
	if c.RedisTimeout <= 0 {
		return errors.New("REDIS_TIMEOUT: must be positive, e.g. 500ms")
	}
	if c.IdentityMode == "" {
		c.IdentityMode = "shared"
		if c.KeysFile != "" {
			c.IdentityMode = "keys"
		}
	}
	switch c.IdentityMode {
	case "shared":
	case "keys", "mesh":
	case "jwt":
		if c.JWTUserClaim == "" {
			return errors.New("JWT_USER_CLAIM: name the claim that identifies the caller (sub by default)")
		}
	default:
		return fmt.Errorf("IDENTITY_MODE: %q is not one of shared, keys, mesh, jwt", c.IdentityMode)
	}
	if (c.EnvoyTLSCert == "") != (c.EnvoyTLSKey == "") {
		return errors.New("ENVOY_TLS_CERT_FILE and ENVOY_TLS_KEY_FILE: set both or neither")
	}
	if err := c.checkExtProcListener(); err != nil {
		return err
	}
	if (c.EnvoyExtProcCert == "") != (c.EnvoyExtProcKey == "") || (c.EnvoyExtProcCert != "") != (c.EnvoyExtProcCA != "") {
		return errors.New("ENVOY_EXTPROC_TLS_CERT_FILE, ENVOY_EXTPROC_TLS_KEY_FILE and ENVOY_EXTPROC_TLS_CA_FILE: set all three (Envoy's mutual TLS to the sidecar) or none")
	}
	if c.FailMode != "closed" && c.FailMode != "open" {
		return fmt.Errorf("FAIL_MODE: %q is not closed or open", c.FailMode)
	}
	if c.SpoolMax <= 0 {
		return errors.New("SPOOL_MAX: must be a positive number of settlements")
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		return errors.New("ADMIN_TOKEN: use at least 16 characters")
	}
	if c.ReservationTTL <= 0 {
		return errors.New("RESERVATION_TTL: must be positive, e.g. 15m")
	}
	if c.DefaultOutput <= 0 {
		return errors.New("DEFAULT_OUTPUT_TOKENS: must be a positive number of tokens")
	}
	if c.MaxBodyBytes < 1024 {
		return errors.New("MAX_REQUEST_BODY_BYTES: must be at least 1024")
	}
	if c.RedisWaitReplicas < 0 || (c.RedisWaitReplicas > 0 && (c.RedisWaitTimeout <= 0 || c.RedisWaitTimeout >= c.RedisTimeout)) {
		return fmt.Errorf("REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT: %d replicas within %s must be within REDIS_TIMEOUT (%s)", c.RedisWaitReplicas, c.RedisWaitTimeout, c.RedisTimeout)
	}
	if c.RedisWaitReplicas > 0 && strings.Contains(c.RedisURL, "+cluster://") {
		return errors.New("REDIS_WAIT_REPLICAS: for redis:// and redis+sentinel:// (a Redis Cluster's WAIT is per node)")
	}
	if c.ShutdownMinDrain < 0 || c.ShutdownMinDrain > c.ShutdownTimeout {
		return fmt.Errorf("SHUTDOWN_MIN_DRAIN: must be between 0 and SHUTDOWN_TIMEOUT (%s)", c.ShutdownTimeout)
	}
	if c.EnvoyAdminURL != "" {
		// It can end Envoy: only its own, on this host or pod.
		u, err := url.Parse(c.EnvoyAdminURL)
		if err != nil || u.Scheme != "http" || !Local(u.Host) {
			return fmt.Errorf("ENVOY_ADMIN_URL: %q is not an http:// URL on loopback (Envoy's admin interface, e.g. http://127.0.0.1:9901)", c.EnvoyAdminURL)
		}
	}
	return nil
}

// firstError keeps the first of env's aggregated errors as one line that
// names the variable (env names the Go field).
func firstError(err error) error {
	var agg env.AggregateError
	if errors.As(err, &agg) && len(agg.Errors) > 0 {
		err = agg.Errors[0]
	}
	var pe env.ParseError
	if errors.As(err, &pe) {
		if f, ok := reflect.TypeOf(Config{}).FieldByName(pe.Name); ok {
			return fmt.Errorf("%s: %v", f.Tag.Get("env"), pe.Err)
		}
	}
	return err
}

// checkExtProcListener refuses an ext_proc port that anyone on the network
// could speak to: beyond a Unix socket or loopback it needs mutual TLS with
// an allow-list, or a mesh that authenticates callers in front of it.
func (c *Config) checkExtProcListener() error {
	clients := c.ExtProcClients[:0]
	for _, id := range c.ExtProcClients {
		if id = strings.TrimSpace(id); id != "" {
			clients = append(clients, id)
		}
	}
	c.ExtProcClients = clients
	tlsSet := c.ExtProcTLSCert != "" || c.ExtProcTLSKey != "" || c.ExtProcClientCA != "" || len(c.ExtProcClients) > 0
	if tlsSet && (c.ExtProcTLSCert == "" || c.ExtProcTLSKey == "" || c.ExtProcClientCA == "" || len(c.ExtProcClients) == 0) {
		return errors.New("EXTPROC_TLS_CERT_FILE, EXTPROC_TLS_KEY_FILE, EXTPROC_TLS_CLIENT_CA_FILE and EXTPROC_TLS_ALLOWED_CLIENTS: set all four for mutual TLS on the ext_proc port")
	}
	if tlsSet && strings.HasPrefix(c.ListenAddr, "unix:") {
		return errors.New("EXTPROC_TLS_*: a Unix socket (LISTEN_ADDR) takes no TLS; unset them, or listen on host:port")
	}
	if tlsSet || c.ExtProcByMesh || Local(c.ListenAddr) {
		return nil
	}
	return fmt.Errorf("LISTEN_ADDR: %q answers ext_proc to anyone who can reach it, and whoever speaks ext_proc admits requests and names identities; "+
		"listen on a Unix socket or 127.0.0.1 next to Envoy, set EXTPROC_TLS_* for mutual TLS, or EXTPROC_AUTHENTICATED_BY_MESH=true behind a mesh that authenticates its callers", c.ListenAddr)
}

// Local says whether addr (host:port or unix:/path) is reachable only from
// this host (or pod).
func Local(addr string) bool {
	if strings.HasPrefix(addr, "unix:") {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
