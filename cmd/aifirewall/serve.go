package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/budgets"
	"github.com/aifirewall/aifirewall/config"
	"github.com/aifirewall/aifirewall/dashboard"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/internal/envoydrain"
	"github.com/aifirewall/aifirewall/internal/mtls"
	"github.com/aifirewall/aifirewall/ledger"
	"github.com/aifirewall/aifirewall/operator"
	"github.com/aifirewall/aifirewall/processor"
)

// serve runs until ctx ends (SIGTERM), then stops gracefully: health goes
// NOT_SERVING, Envoy is drained (ENVOY_ADMIN_URL) or given
// SHUTDOWN_MIN_DRAIN and its open streams, all within SHUTDOWN_TIMEOUT,
// then the gRPC server stops and pending settlements are written.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	billing.LogRedisTo(log)
	store, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	prices, err := billing.LoadPrices(cfg.PricingFile, cfg.Fallback)
	if err != nil {
		return fmt.Errorf("PRICING_FILE: %w", err)
	}
	prices.OnUnknown = func(model string) {
		log.Warn("model not in the price table; billing it at the fallback price", "model", model,
			"input_per_token_nanos", int64(cfg.Fallback.Input), "output_per_token_nanos", int64(cfg.Fallback.Output))
	}
	ups, err := upstreams(ctx, cfg, prices, log)
	if err != nil {
		return err
	}
	tk, err := billing.NewTokenizer()
	if err != nil {
		return err
	}
	settler, stopSettler, err := startSettler(cfg, store, log)
	if err != nil {
		return err
	}
	defer stopSettler()

	keyStore, _ := store.(billing.KeyStore)
	auth, err := authenticator(ctx, cfg, keyStore, log)
	if err != nil {
		return err
	}
	upstreamKey := "" // Envoy holds it, unless PROVIDER_KEYS_IN_EXTPROC
	if cfg.ProviderKeysInExtProc {
		upstreamKey = cfg.UpstreamAPIKey
	}
	rec, history, stopLedger, err := startLedger(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer stopLedger()
	defs, _ := store.(billing.BudgetDefStore)
	budgetSrc, err := loadBudgets(ctx, cfg, defs, log)
	if err != nil {
		return err
	}
	proc := processor.New(processor.Config{
		Auth: auth, Upstream: cfg.Provider, UpstreamKey: upstreamKey, Upstreams: ups, Policy: policy(cfg), SendKeys: cfg.ProviderKeysInExtProc,
		DailyLimit: cfg.Limit, Location: cfg.Location, StoreTimeout: cfg.RedisTimeout,
		ReservationTTL: cfg.ReservationTTL, DefaultOutputTokens: cfg.DefaultOutput, Cutoff: cfg.StreamCutoff,
		Settler: settler, FailOpen: cfg.FailMode == "open", Budgets: &budgetSrc.Current, Ledger: rec, History: history,
	}, store, prices, tk, log, nil).WithMetrics(processor.NewMetrics(prometheus.DefaultRegisterer, cfg.MetricsPerUser))

	// Renewal outlives ctx: streams still draining after SIGTERM keep
	// their reservations until they settle.
	renewCtx, stopRenew := context.WithCancel(context.Background())
	defer stopRenew()
	go proc.RenewReservations(renewCtx)

	lis, err := listen(cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("LISTEN_ADDR: %w", err)
	}
	adminLis, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		lis.Close()
		return fmt.Errorf("ADMIN_ADDR: %w", err)
	}
	// A buffered request body arrives in one message: allow the body limit.
	opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(int(cfg.MaxBodyBytes) + 1<<20)}
	if cfg.ExtProcTLSCert != "" {
		m, err := mtls.NewServer(cfg.ExtProcTLSCert, cfg.ExtProcTLSKey, cfg.ExtProcClientCA, cfg.ExtProcClients)
		if err != nil {
			lis.Close()
			adminLis.Close()
			return fmt.Errorf("EXTPROC_TLS_*: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(m.Config())))
		log.Info("ext_proc requires mutual TLS", "allowed_clients", cfg.ExtProcClients)
	}
	gs := grpc.NewServer(opts...)
	extprocv3.RegisterExternalProcessorServer(gs, proc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	admin := &http.Server{Handler: adminMux(store, cfg.RedisTimeout), ReadHeaderTimeout: 5 * time.Second}

	errc := make(chan error, 3)
	go func() { errc <- gs.Serve(lis) }()
	go func() { errc <- admin.Serve(adminLis) }()
	if cfg.AdminToken != "" {
		ops, err := operatorServer(cfg, store, keyStore, budgetSrc, history, log)
		if err != nil {
			return err
		}
		defer ops.Close()
	} else {
		log.Info("operator API off: set ADMIN_TOKEN to serve it")
	}
	log.Info("serving", "ext_proc", lis.Addr().String(), "admin", adminLis.Addr().String(),
		"upstream", upstreamName(cfg), "daily_limit", cfg.Limit.String(),
		"prices", prices.Len())

	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("server stopped: %w", err)
	}
	log.Info("shutting down", "deadline", cfg.ShutdownTimeout.String())
	deadline, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Envoy still sends requests on the connections its clients keep
	// alive: keep answering until it has none left, or gRPC's graceful
	// stop would refuse them.
	if cfg.EnvoyAdminURL != "" {
		// This sidecar is its Envoy's only one: it stays SERVING until
		// that Envoy is drained.
		envoydrain.Drain(deadline, envoydrain.Admin{URL: cfg.EnvoyAdminURL}, cfg.ShutdownMinDrain, 200*time.Millisecond, log)
		hs.Shutdown()
	} else {
		hs.Shutdown() // NOT_SERVING: an Envoy with other sidecars sends new requests there
		waitIdle(deadline, proc, cfg.ShutdownMinDrain)
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-deadline.Done():
		log.Warn("in-flight streams outlived the shutdown deadline; closing them")
		gs.Stop() // their streams end; each settles what it saw
	}
	if err := proc.Drain(deadline); err != nil {
		log.Error("settlements not written at exit; the spool replays them at the next start", "err", err)
	}
	_ = admin.Shutdown(deadline)
	log.Info("stopped")
	return nil
}

// waitIdle waits minDrain, for Envoy's clients to move on, then until no
// ext_proc stream is open, or ctx ends.
func waitIdle(ctx context.Context, proc *processor.Server, minDrain time.Duration) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(minDrain):
	}
	for proc.OpenStreams() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func openStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (billing.Store, error) {
	if cfg.BudgetStore == "memory" {
		log.Warn("BUDGET_STORE=memory: budgets live in this process only and are lost on restart")
		return billing.NewMemStore(), nil
	}
	rs, err := billing.NewRedisStore(cfg.RedisURL, billing.WithCAFile(cfg.RedisCAFile),
		billing.WithReplicaAck(cfg.RedisWaitReplicas, cfg.RedisWaitTimeout))
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err = rs.Ping(pctx)
	switch {
	case err == nil:
		log.Info("budget store: redis")
		return rs, nil
	case cfg.BudgetStore == "auto":
		rs.Close()
		log.Warn("Redis is not answering; using an embedded in-memory store: budgets live in this process only", "err", err)
		return billing.NewMemStore(), nil
	default:
		// Start anyway: /readyz reports the store down and requests fail
		// closed with 503 until Redis answers.
		log.Error("Redis is not answering; requests get 503 until it does", "err", err)
		return rs, nil
	}
}

func adminMux(store billing.Store, timeout time.Duration) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		if err := store.Ping(ctx); err != nil {
			http.Error(w, "budget store unreachable", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// startSettler opens the spool and retries what it holds in the background
// until stop; its backlog and losses are exported as metrics.
func startSettler(cfg *config.Config, store billing.Store, log *slog.Logger) (*billing.Settler, func(), error) {
	settler, err := billing.NewSettler(store, cfg.SpoolFile, cfg.SpoolMax, cfg.RedisTimeout, log)
	if err != nil {
		return nil, nil, fmt.Errorf("SPOOL_FILE: %w", err)
	}
	lost := prometheus.NewCounter(prometheus.CounterOpts{Name: "aifirewall_settlements_lost_total",
		Help: "Settlements dropped because the retry queue was full (SPOOL_MAX)."})
	settler.OnLost = func(billing.Settlement) { lost.Inc() }
	prometheus.MustRegister(lost, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "aifirewall_settlements_queued",
		Help: "Settlements waiting for the budget store (in the spool)."}, func() float64 { return float64(settler.Pending()) }))
	ctx, cancel := context.WithCancel(context.Background())
	go settler.Run(ctx)
	return settler, func() { cancel(); settler.Close() }, nil
}

// operatorServer serves the operator API (gRPC) and the dashboard (HTTP)
// on OPERATOR_ADDR.
func operatorServer(cfg *config.Config, store billing.Store, keys billing.KeyStore, budgetSrc *budgets.Source, history processor.Reporter, log *slog.Logger) (*http.Server, error) {
	lis, err := net.Listen("tcp", cfg.OperatorAddr)
	if err != nil {
		return nil, fmt.Errorf("OPERATOR_ADDR: %w", err)
	}
	unary, stream := operator.TokenAuth(cfg.AdminToken)
	gs := grpc.NewServer(grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))
	srv := &operator.Server{Store: store, Keys: keys, Limit: cfg.Limit, Location: cfg.Location, Log: log, Now: time.Now,
		Budgets: budgetSrc, Defs: budgetSrc.Defs}
	var reports dashboard.Reporter
	if history != nil {
		srv.Ledger, reports = history, history
	}
	if cfg.IdentityMode == "mesh" {
		srv.KeyWarning = "this gateway runs with IDENTITY_MODE=mesh, which accepts no API keys: the key is stored, " +
			"but requests with it get 401 until IDENTITY_MODE is shared (the default) or keys"
	}
	srv.Register(gs)
	hs := operator.HTTPServer(gs, dashboard.New(cfg.AdminToken, srv, reports, time.Now, log))
	go func() {
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("operator API stopped", "err", err)
		}
	}()
	log.Info("operator API and dashboard serving", "addr", lis.Addr().String(), "dashboard", "/dashboard/")
	return hs, nil
}

// authenticator builds the identity mode of the configuration.
func authenticator(ctx context.Context, cfg *config.Config, keyStore billing.KeyStore, log *slog.Logger) (identity.Authenticator, error) {
	switch cfg.IdentityMode {
	case "keys":
		ring, err := keyring(ctx, cfg, keyStore, log)
		if err != nil {
			return nil, err
		}
		log.Info("identity: per-user keys only", "file", cfg.KeysFile)
		return ring, nil
	case "mesh":
		groups, err := identity.ParseMeshGroups(cfg.MeshGroups)
		if err != nil {
			return nil, fmt.Errorf("MESH_GROUPS: %w", err)
		}
		log.Info("identity: mesh workloads (SPIFFE ID of the client certificate)", "trust_xfcc", cfg.TrustXFCC, "groups", len(groups))
		return identity.Mesh{TrustXFCC: cfg.TrustXFCC, Groups: groups}, nil
	case "jwt":
		log.Info("identity: tokens Envoy's jwt_authn verified", "user_claim", cfg.JWTUserClaim, "groups_claim", cfg.JWTGroupsClaim)
		return identity.JWT{UserClaim: cfg.JWTUserClaim, GroupsClaim: cfg.JWTGroupsClaim}, nil
	default:
		if cfg.InternalAPIKey == config.DefaultAPIKey {
			log.Warn("INTERNAL_API_KEY is the default 'changeme-internal-key'; set your own before exposing the gateway")
		}
		shared := identity.NewSharedKey(cfg.InternalAPIKey)
		if keyStore == nil {
			return shared, nil
		}
		ring, err := keyring(ctx, cfg, keyStore, log)
		if err != nil {
			return nil, err
		}
		log.Info("identity: the shared key, and per-user keys beside it", "file", cfg.KeysFile)
		return identity.SharedAndKeys{Shared: shared, Keys: ring}, nil
	}
}

// startLedger opens LEDGER_URL, if set, and writes to it in the
// background until stop, which writes (or spools) what is queued.
func startLedger(ctx context.Context, cfg *config.Config, log *slog.Logger) (processor.Recorder, processor.Reporter, func(), error) {
	if cfg.LedgerURL == "" {
		return nil, nil, func() {}, nil
	}
	store, err := ledger.Open(ctx, cfg.LedgerURL)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("LEDGER_URL: %w", err)
	}
	w, err := ledger.NewWriter(store, filepath.Join(filepath.Dir(cfg.SpoolFile), "ledger.jsonl"), log)
	if err != nil {
		store.Close()
		return nil, nil, nil, err
	}
	// Outlives ctx: streams draining after SIGTERM are recorded too.
	wctx, cancel := context.WithCancel(context.Background())
	go w.Run(wctx)
	log.Info("ledger", "url", cfg.LedgerURL)
	return w, store, func() { cancel(); w.Wait(); store.Close() }, nil
}

// loadBudgets reads BUDGETS_FILE, if set, and the budgets made through
// the operator API, and keeps both fresh.
func loadBudgets(ctx context.Context, cfg *config.Config, defs billing.BudgetDefStore, log *slog.Logger) (*budgets.Source, error) {
	src := &budgets.Source{Path: cfg.BudgetsFile, Defs: defs, Log: log}
	if err := src.Load(ctx); err != nil {
		return nil, fmt.Errorf("BUDGETS_FILE: %w", err)
	}
	log.Info("budgets", "file", cfg.BudgetsFile, "budgets", len(src.Current.Load().Budgets))
	go src.Watch(ctx, 2*time.Second)
	return src, nil
}

// keyring loads the per-user keys (KEYS_FILE and operator-made ones) and
// keeps them fresh.
func keyring(ctx context.Context, cfg *config.Config, keyStore billing.KeyStore, log *slog.Logger) (*identity.Keyring, error) {
	var file *identity.KeysFile
	if cfg.KeysFile != "" {
		var err error
		if file, err = identity.LoadKeys(cfg.KeysFile); err != nil {
			return nil, fmt.Errorf("KEYS_FILE: %w", err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, cfg.RedisTimeout)
	ring, err := identity.NewKeyring(rctx, file, keyStore)
	cancel()
	if err != nil {
		// Redis down at start: the file's keys work; added ones load at
		// the next refresh.
		log.Warn("operator-made keys not loaded yet; they load when the budget store answers", "err", err)
		ring = identity.NewKeyringEmpty(file, keyStore)
	}
	go ring.Watch(ctx, 2*time.Second, log)
	return ring, nil
}

// listen opens host:port, or unix:/path (a socket file shared with Envoy
// in the same pod; a stale one from a previous run is replaced).
func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", addr)
}
