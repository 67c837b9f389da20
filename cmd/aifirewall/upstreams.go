package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/config"
	"github.com/aifirewall/aifirewall/internal/loop"
	"github.com/aifirewall/aifirewall/processor"
	"github.com/aifirewall/aifirewall/providers"
)

// credentialReload is how often key files (mounted Secrets) are re-read.
const credentialReload = 10 * time.Second

// upstreams turns the providers file into the processor's providers, each
// with its own price table. Provider keys are Envoy's to hold: the sidecar
// reads them (re-read from their files until ctx ends) only with
// PROVIDER_KEYS_IN_EXTPROC. Nil without a providers file: the UPSTREAM_*
// shorthand.
func upstreams(ctx context.Context, cfg *config.Config, prices *billing.Prices, log *slog.Logger) (map[string]*processor.Upstream, error) {
	if cfg.Providers == nil {
		if cfg.ProviderKeysInExtProc && cfg.UpstreamAPIKey == "" {
			log.Warn("UPSTREAM_API_KEY is empty; the upstream will likely reject requests")
		}
		return nil, nil
	}
	ups := map[string]*processor.Upstream{}
	for _, p := range cfg.Providers.Providers {
		up := &processor.Upstream{Name: p.Name, Kind: p.Kind, PathPrefix: p.PathPrefix}
		ups[p.Name] = up
		if p.PricingFile != "" || len(p.Prices) > 0 {
			var err error
			if up.Prices, err = p.PriceTable(prices); err != nil {
				return nil, fmt.Errorf("PROVIDERS_FILE: %w", err)
			}
		}
		log.Info("provider", "name", p.Name, "format", string(p.Kind), "base_url", providers.Redact(p.URL.String()),
			"hosts", p.Hosts, "path_prefix", p.PathPrefix, "own_prices", up.Prices != nil)
		if !cfg.ProviderKeysInExtProc || (p.APIKeyEnv == "" && p.APIKeyFile == "") {
			continue
		}
		cred, err := p.Credential()
		if err != nil {
			return nil, fmt.Errorf("PROVIDERS_FILE: %w", err)
		}
		up.Key = cred.Key
		if p.APIKeyFile != "" {
			name := p.Name
			go loop.Every(ctx, credentialReload, func() {
				if changed, err := cred.Reload(); err != nil {
					log.Error("provider key file not re-read; the previous key stays in use", "provider", name, "err", err)
				} else if changed {
					log.Info("provider key reloaded", "provider", name)
				}
			})
		}
	}
	return ups, nil
}

func policy(cfg *config.Config) *providers.Policies {
	if cfg.Providers == nil {
		return nil
	}
	return cfg.Providers.PolicySet()
}

func upstreamName(cfg *config.Config) string {
	if cfg.Providers != nil {
		return "PROVIDERS_FILE " + cfg.ProvidersFile
	}
	return providers.Redact(cfg.UpstreamBaseURL) + " (" + string(cfg.Provider) + ")"
}
