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
// with its credential (re-read from its file until ctx ends) and its own
// price table. Nil without a providers file: the UPSTREAM_* shorthand.
func upstreams(ctx context.Context, cfg *config.Config, prices *billing.Prices, log *slog.Logger) (map[string]*processor.Upstream, error) {
	if cfg.Providers == nil {
		if cfg.UpstreamAPIKey == "" {
			log.Warn("UPSTREAM_API_KEY is empty; the upstream will likely reject requests")
		}
		return nil, nil
	}
	ups := map[string]*processor.Upstream{}
	for _, p := range cfg.Providers.Providers {
		cred, err := p.Credential()
		if err != nil {
			return nil, fmt.Errorf("PROVIDERS_FILE: %w", err)
		}
		up := &processor.Upstream{Name: p.Name, Kind: p.Kind, PathPrefix: p.PathPrefix, Key: cred.Key}
		if p.PricingFile != "" || len(p.Prices) > 0 {
			if up.Prices, err = p.PriceTable(prices); err != nil {
				return nil, fmt.Errorf("PROVIDERS_FILE: %w", err)
			}
		}
		ups[p.Name] = up
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
		log.Info("provider", "name", p.Name, "format", string(p.Kind), "base_url", p.URL.String(),
			"hosts", p.Hosts, "path_prefix", p.PathPrefix, "own_prices", up.Prices != nil)
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
	return cfg.UpstreamBaseURL + " (" + string(cfg.Provider) + ")"
}
