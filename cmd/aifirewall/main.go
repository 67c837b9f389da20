// Command aifirewall is the Envoy ext_proc sidecar that authenticates LLM
// calls, enforces per-user daily budgets and bills what they cost.
//
//	aifirewall                 serve (ext_proc gRPC on LISTEN_ADDR, admin HTTP on ADMIN_ADDR)
//	aifirewall envoy-config    print the Envoy configuration for these settings
//	aifirewall hash-key        print the SHA-256 of a key read from stdin, for KEYS_FILE
//	aifirewall admin ...       the operator API's CLI (usage, users, set-limit, add-key, revoke-key, budgets)
//	aifirewall report ...      spend from the ledger, by user, group, provider, model or day
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // BUDGET_TIMEZONE works in a minimal image with no zone files

	"github.com/aifirewall/aifirewall/config"
	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/internal/grpcbuf"
	"github.com/aifirewall/aifirewall/ledger"
	"github.com/aifirewall/aifirewall/operator"
)

// gRPC's buffer pool can only be replaced before any gRPC use.
func init() { grpcbuf.Install() }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "aifirewall:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "admin" {
		addr := os.Getenv("OPERATOR_ADDR")
		if addr == "" || addr[0] == ':' {
			addr = "127.0.0.1" + addr
			if addr == "127.0.0.1" {
				addr += ":9091"
			}
		}
		return operator.RunCLI(context.Background(), args[1:], addr, os.Stdout)
	}
	if len(args) > 0 && args[0] == "report" {
		return ledger.RunReport(context.Background(), args[1:], os.Getenv("LEDGER_URL"), time.Now(), os.Stdout)
	}
	if len(args) > 0 && args[0] == "hash-key" {
		// Reads the key from stdin so it never lands in shell history.
		key, err := io.ReadAll(io.LimitReader(os.Stdin, 4096))
		if err != nil {
			return err
		}
		k := strings.TrimSpace(string(key))
		if k == "" {
			return fmt.Errorf("hash-key: no key on standard input")
		}
		fmt.Println(identity.HashKey(k))
		return nil
	}
	envFile := os.Getenv("ENV_FILE")
	if envFile == "" {
		envFile = ".env"
	}
	cfg, err := config.Load(envFile)
	if err != nil {
		return err
	}
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: cfg.Level}))
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		return serve(ctx, cfg, log)
	case "envoy-config":
		return envoyConfig(cfg, args)
	default:
		return fmt.Errorf("unknown command %q (want serve, envoy-config or hash-key)", cmd)
	}
}

func envoyConfig(cfg *config.Config, args []string) error {
	fs := flag.NewFlagSet("envoy-config", flag.ContinueOnError)
	out := fs.String("o", "-", "file to write, - for standard output")
	ca := fs.String("ca-file", "", "CA bundle to verify an https upstream (default: the system bundle)")
	sds := fs.String("sds-dir", "", "directory for the SDS files through which Envoy reads provider keys (default: the directory of -o)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sds == "" && *out != "-" {
		*sds = filepath.Dir(*out)
	}
	o := envoy.Options{
		ListenAddr: cfg.EnvoyListenAddr, AdminAddr: cfg.EnvoyAdminAddr, HealthAddr: cfg.EnvoyHealthAddr, ExtProcAddr: cfg.ExtProcAddr,
		UpstreamURL: cfg.UpstreamBaseURL, UpstreamKind: cfg.Provider, MaxBodyBytes: cfg.MaxBodyBytes, CACertFile: *ca,
		SecretDir: *sds,
		Limits: envoy.Limits{MaxStreams: cfg.EnvoyMaxStreams, MaxDownstreamConnections: cfg.EnvoyMaxConnections,
			MaxHeapBytes: cfg.EnvoyMaxHeapBytes},
	}
	if cfg.Providers != nil {
		o.Providers = cfg.Providers.Providers
		for _, p := range o.Providers {
			if p.APIKeyEnv == "" && p.APIKeyFile == "" {
				fmt.Fprintf(os.Stderr, "aifirewall envoy-config: provider %s has no api_key_env or api_key_file; Envoy will present no key to it\n", p.Name)
			}
		}
	} else if cfg.UpstreamAPIKey != "" {
		o.UpstreamKeyEnv = "UPSTREAM_API_KEY"
	} else {
		fmt.Fprintln(os.Stderr, "aifirewall envoy-config: UPSTREAM_API_KEY is empty; Envoy will present no key to the upstream")
	}
	o.TLS.CertFile, o.TLS.KeyFile, o.TLS.ClientCAFile = cfg.EnvoyTLSCert, cfg.EnvoyTLSKey, cfg.EnvoyClientCA
	if cfg.IdentityMode == "jwt" {
		if cfg.JWTIssuer == "" || (cfg.JWTJWKSFile == "") == (cfg.JWTJWKSURL == "") || len(cfg.JWTAudiences) == 0 {
			return errors.New("IDENTITY_MODE=jwt: set JWT_ISSUER, JWT_AUDIENCES and one of JWT_JWKS_FILE or JWT_JWKS_URL for Envoy to verify tokens")
		}
		o.JWT = envoy.JWT{Issuer: cfg.JWTIssuer, Audiences: cfg.JWTAudiences, JWKSFile: cfg.JWTJWKSFile, JWKSURL: cfg.JWTJWKSURL}
	}
	o.ExtProcTLS.CertFile, o.ExtProcTLS.KeyFile = cfg.EnvoyExtProcCert, cfg.EnvoyExtProcKey
	o.ExtProcTLS.CAFile, o.ExtProcTLS.ServerName = cfg.EnvoyExtProcCA, cfg.EnvoyExtProcServer
	// Envoy, not the sidecar, holds the keys: they must be there for it.
	if err := envoy.CheckKeys(o); err != nil {
		return err
	}
	y, err := envoy.YAML(o)
	if err != nil {
		return err
	}
	files, err := envoy.SecretFiles(o)
	if err != nil {
		return err
	}
	for path, b := range files {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return fmt.Errorf("write SDS file: %w", err)
		}
	}
	if *out == "-" {
		_, err = os.Stdout.Write(y)
		return err
	}
	return os.WriteFile(*out, y, 0o644)
}
