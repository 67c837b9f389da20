// Package providers reads the providers file: the LLM providers one
// firewall fronts, how Envoy routes a request to each (by host, by path
// prefix), where each one's credential lives, its own prices, and which
// identities may call which providers and models.
package providers

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/strictyaml"
	"github.com/aifirewall/aifirewall/processor/provider"
)

// File is a parsed and checked providers file.
type File struct {
	Providers []Provider `yaml:"providers"`
	Policies  []Policy   `yaml:"policies"`
}

// Provider is one upstream LLM API.
type Provider struct {
	Name    string `yaml:"name"`
	Format  string `yaml:"format"` // openai, openrouter, anthropic, openai-compatible
	BaseURL string `yaml:"base_url"`
	// Hosts are the :authority values routed here (workloads calling
	// https://api.openai.com through the mesh); PathPrefix routes
	// /<prefix>/v1/... here on any host, "/" taking whatever nothing else does.
	Hosts      []string `yaml:"hosts"`
	PathPrefix string   `yaml:"path_prefix"`
	// The credential sent upstream, from the environment or a file (a
	// mounted Secret), which Envoy reads; never written in this file.
	// Neither: the proxy in front (an Envoy Gateway or Istio egress
	// gateway holding the key itself) or a provider that takes none.
	APIKeyEnv  string `yaml:"api_key_env"`
	APIKeyFile string `yaml:"api_key_file"`
	// CAFile verifies an https upstream (default: the system bundle).
	CAFile string `yaml:"ca_file"`
	// PricingFile (LiteLLM's JSON) and Prices lay this provider's own
	// prices over the shared table.
	PricingFile string               `yaml:"pricing_file"`
	Prices      map[string]PriceSpec `yaml:"prices"`

	Kind provider.Kind `yaml:"-"`
	URL  *url.URL      `yaml:"-"`
}

// PriceSpec is a model's price in US dollars per million tokens, written
// as decimals ("0.15"); unset kinds fall back as in the shared table.
type PriceSpec struct {
	Input      string `yaml:"input"`
	Output     string `yaml:"output"`
	CacheRead  string `yaml:"cache_read"`
	CacheWrite string `yaml:"cache_write"`
	Reasoning  string `yaml:"reasoning"`
}

// Load reads and checks the providers file at path.
func Load(path string) (*File, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read providers file: %w", err)
	}
	return Parse(path, raw)
}

// Parse checks raw strictly: unknown or repeated keys, wrong types and
// every inconsistency are errors naming the file, line and field.
func Parse(name string, raw []byte) (*File, error) {
	var f File
	fail, err := strictyaml.Decode(name, raw, &f)
	if err != nil {
		return nil, err
	}
	if err := f.check(fail); err != nil {
		return nil, err
	}
	return &f, nil
}

type failer = strictyaml.Fail

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	hostRE   = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	prefixRE = regexp.MustCompile(`^(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+$`)
)

func (f *File) check(fail failer) error {
	if len(f.Providers) == 0 {
		return fail("$.providers", "list at least one provider")
	}
	names, hosts, prefixes := map[string]bool{}, map[string]string{}, map[string]string{}
	for i := range f.Providers {
		p := &f.Providers[i]
		at := fmt.Sprintf("$.providers[%d]", i)
		if err := p.check(at, fail); err != nil {
			return err
		}
		if names[p.Name] {
			return fail(at+".name", "provider %q is listed twice", p.Name)
		}
		names[p.Name] = true
		for j, h := range p.Hosts {
			if other, dup := hosts[h]; dup {
				return fail(fmt.Sprintf("%s.hosts[%d]", at, j), "host %q is already served by provider %q", h, other)
			}
			hosts[h] = p.Name
		}
		if p.PathPrefix != "" {
			if other, dup := prefixes[p.PathPrefix]; dup {
				return fail(at+".path_prefix", "path prefix %q is already served by provider %q", p.PathPrefix, other)
			}
			prefixes[p.PathPrefix] = p.Name
		}
	}
	return checkPolicies(f.Policies, names, fail)
}

func (p *Provider) check(at string, fail failer) error {
	if !nameRE.MatchString(p.Name) {
		return fail(at+".name", "%q must be lower-case letters, digits and dashes (it names the Envoy cluster and metric labels)", p.Name)
	}
	switch k := provider.Kind(p.Format); k {
	case provider.OpenAI, provider.OpenRouter, provider.Anthropic, provider.OpenAICompatible:
		p.Kind = k
	default:
		return fail(at+".format", "%q is not one of openai, openrouter, anthropic, openai-compatible", p.Format)
	}
	u, err := url.Parse(p.BaseURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fail(at+".base_url", "%q must be an http:// or https:// URL without credentials, query or fragment", Redact(p.BaseURL))
	}
	p.URL = u
	if len(p.Hosts) == 0 && p.PathPrefix == "" {
		return fail(at, "give hosts, a path_prefix, or both, so that Envoy can route requests to %q", p.Name)
	}
	for j, h := range p.Hosts {
		if !hostRE.MatchString(h) {
			return fail(fmt.Sprintf("%s.hosts[%d]", at, j), "%q must be a lower-case DNS name without a port (a leading *. is allowed)", h)
		}
	}
	if p.PathPrefix != "" && p.PathPrefix != "/" {
		if !prefixRE.MatchString(p.PathPrefix) || slices.Contains(strings.Split(p.PathPrefix, "/"), "..") {
			return fail(at+".path_prefix", "%q must be / or /segment[/segment...] without a trailing slash, dot segments or escapes", p.PathPrefix)
		}
	}
	if p.APIKeyEnv != "" && p.APIKeyFile != "" {
		return fail(at, "set one of api_key_env and api_key_file for %q, not both (its credential is never written in this file)", p.Name)
	}
	if p.CAFile != "" && u.Scheme != "https" {
		return fail(at+".ca_file", "only an https:// base_url is verified with a CA file")
	}
	for model, spec := range p.Prices {
		if _, err := spec.price(); err != nil {
			return fail(fmt.Sprintf("%s.prices.%s", at, model), "%v", err)
		}
	}
	return nil
}

func (s PriceSpec) price() (billing.Price, error) {
	var p billing.Price
	if s.Input == "" || s.Output == "" {
		return p, errors.New("give at least input and output, in USD per million tokens")
	}
	for _, f := range []struct {
		name, v string
		dst     *billing.Nanos
	}{{"input", s.Input, &p.Input}, {"output", s.Output, &p.Output}, {"cache_read", s.CacheRead, &p.CacheRead},
		{"cache_write", s.CacheWrite, &p.CacheWrite}, {"reasoning", s.Reasoning, &p.Reasoning}} {
		if f.v == "" {
			continue
		}
		n, err := billing.ParsePerMTok(f.v)
		if err != nil {
			return p, fmt.Errorf("%s: %v", f.name, err)
		}
		*f.dst = n
	}
	return p, nil
}

// PriceTable lays the provider's own prices over base.
func (p *Provider) PriceTable(base *billing.Prices) (*billing.Prices, error) {
	models := make(map[string]billing.Price, len(p.Prices))
	for m, s := range p.Prices {
		models[m], _ = s.price() // checked at Parse
	}
	t, err := base.With(p.PricingFile, models)
	if err != nil {
		return nil, fmt.Errorf("provider %s: %w", p.Name, err)
	}
	return t, nil
}
