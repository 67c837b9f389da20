package providers

import (
	"fmt"
	"slices"
	"strings"

	"github.com/aifirewall/aifirewall/internal/glob"
)

// Policy lets identities call providers and models. An identity named by
// any policy (other than "*") may call only what its policies allow; "*"
// sets what every identity no policy names may call; with no "*", those
// identities may call everything.
type Policy struct {
	// Identities: user ids (per-user key owners, shared-key users) and
	// SPIFFE IDs; "*" matches any run of characters, so
	// "spiffe://cluster.local/ns/ci/*" names a namespace.
	Identities []string `yaml:"identities"`
	// Providers by name; absent: any. An empty list allows none.
	Providers *[]string `yaml:"providers"`
	// Models as requested ("gpt-4o-mini", "claude-*"); absent: any.
	Models *[]string `yaml:"models"`
}

// Policies decides what an identity may call. The zero value allows
// everything, as does a nil one.
type Policies struct{ list []Policy }

// PolicySet returns the file's policies.
func (f *File) PolicySet() *Policies { return &Policies{list: f.Policies} }

// Denied is a request the policy refuses; its message is safe to show the
// caller and says what is allowed.
type Denied struct {
	Model bool // the model was refused (else the provider)
	Msg   string
}

func (d *Denied) Error() string { return d.Msg }

// Allow says whether identity may call model at provider; model "" asks
// about the provider alone (a request naming no model).
func (p *Policies) Allow(identity, prov, model string) *Denied {
	if p == nil {
		return nil
	}
	rules := p.rulesFor(identity)
	if rules == nil {
		return nil
	}
	providerOK := false
	for _, r := range rules {
		if !r.allowsProvider(prov) {
			continue
		}
		providerOK = true
		if model == "" || r.allowsModel(model) {
			return nil
		}
	}
	if !providerOK {
		return &Denied{Msg: fmt.Sprintf("%s may not call provider %q through this gateway; %s. Ask your gateway operator if you need it.",
			identity, prov, describe(rules))}
	}
	var models []string
	for _, r := range rules {
		if r.allowsProvider(prov) {
			models = append(models, *r.Models...)
		}
	}
	return &Denied{Model: true, Msg: fmt.Sprintf("%s may not use model %q at provider %q; allowed there: %s. Ask your gateway operator if you need it.",
		identity, model, prov, strings.Join(models, ", "))}
}

// AllowAnyModel says whether identity may have provider pick any model
// (OpenRouter's auto router, a preset): only when its policies let it use
// every model there.
func (p *Policies) AllowAnyModel(identity, prov, field string) *Denied {
	if p == nil {
		return nil
	}
	rules := p.rulesFor(identity)
	if rules == nil {
		return nil
	}
	var models []string
	for _, r := range rules {
		if !r.allowsProvider(prov) {
			continue
		}
		if r.Models == nil || slices.Contains(*r.Models, "*") {
			return nil
		}
		models = append(models, *r.Models...)
	}
	if models == nil {
		return p.Allow(identity, prov, "")
	}
	return &Denied{Model: true, Msg: fmt.Sprintf("'%s' lets provider %q choose the model, and %s may use only %s there; name one of those models instead. Ask your gateway operator if you need more.",
		field, prov, identity, strings.Join(models, ", "))}
}

// rulesFor returns the policies naming identity, else the "*" ones, else
// nil (no policy: everything allowed).
func (p *Policies) rulesFor(identity string) []Policy {
	var named, star []Policy
	for _, r := range p.list {
		for _, id := range r.Identities {
			if id == "*" {
				star = append(star, r)
				break
			}
			if glob.Match(id, identity) {
				named = append(named, r)
				break
			}
		}
	}
	if named != nil {
		return named
	}
	return star
}

func (r Policy) allowsProvider(name string) bool {
	return r.Providers == nil || slices.Contains(*r.Providers, name)
}

func (r Policy) allowsModel(model string) bool {
	if r.Models == nil {
		return true
	}
	for _, m := range *r.Models {
		if glob.Match(m, model) {
			return true
		}
	}
	return false
}

// describe says what rules allow, for a refusal.
func describe(rules []Policy) string {
	var parts []string
	for _, r := range rules {
		provs := "any provider"
		if r.Providers != nil {
			if len(*r.Providers) == 0 {
				continue
			}
			provs = strings.Join(*r.Providers, ", ")
		}
		if r.Models != nil {
			provs += " (models " + strings.Join(*r.Models, ", ") + ")"
		}
		parts = append(parts, provs)
	}
	if len(parts) == 0 {
		return "it may call no provider"
	}
	return "it may call " + strings.Join(parts, "; ")
}

func checkPolicies(list []Policy, providers map[string]bool, fail failer) error {
	for i, r := range list {
		at := fmt.Sprintf("$.policies[%d]", i)
		if len(r.Identities) == 0 {
			return fail(at, "list the identities this policy applies to (\"*\" for everyone no other policy names)")
		}
		for j, id := range r.Identities {
			if strings.TrimSpace(id) == "" || strings.TrimSpace(id) != id {
				return fail(fmt.Sprintf("%s.identities[%d]", at, j), "%q is not an identity", id)
			}
		}
		if r.Providers != nil {
			for j, name := range *r.Providers {
				if !providers[name] {
					return fail(fmt.Sprintf("%s.providers[%d]", at, j), "no provider is named %q", name)
				}
			}
		}
		if r.Models != nil {
			if len(*r.Models) == 0 {
				return fail(at+".models", "list at least one model, or leave models out to allow any")
			}
			for j, m := range *r.Models {
				if strings.TrimSpace(m) == "" {
					return fail(fmt.Sprintf("%s.models[%d]", at, j), "a model pattern must not be empty")
				}
			}
		}
	}
	return nil
}
