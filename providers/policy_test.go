package providers

import (
	"strings"
	"testing"
)

func TestPolicyMatrix(t *testing.T) {
	f, err := Load("../deploy/providers.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := f.PolicySet()
	cases := []struct {
		who, prov, model string
		allowed          bool
		want             string
	}{
		{"alice", "openai", "gpt-4o-mini", true, ""},
		{"alice", "openai", "gpt-4.1-nano", true, ""},
		{"alice", "anthropic", "claude-haiku-4-5", true, ""},
		{"alice", "openai", "gpt-4o", false, `alice may not use model "gpt-4o" at provider "openai"; allowed there: gpt-4o-mini, gpt-4.1-*`},
		{"alice", "anthropic", "claude-opus-4-1", false, `allowed there: claude-haiku-*`},
		{"alice", "openrouter", "openai/gpt-4o-mini", false, `alice may not call provider "openrouter" through this gateway; it may call openai (models gpt-4o-mini, gpt-4.1-*); anthropic (models claude-haiku-*)`},
		{"alice", "openai", "", true, ""},
		{"alice", "openrouter", "", false, `may not call provider "openrouter"`},
		{"spiffe://cluster.local/ns/ci/sa/runner", "openai", "gpt-4o-mini", true, ""},
		{"spiffe://cluster.local/ns/ci/sa/runner", "anthropic", "claude-haiku-4-5", false, `may not call provider "anthropic"`},
		{"spiffe://cluster.local/ns/prod/sa/api", "openrouter", "anything/at-all", true, ""},
		{"spiffe://cluster.local/ns/prod/sa/api", "openai", "gpt-4o-mini", false, `it may call openrouter.`},
		{"bob", "openrouter", "x", true, ""},
		{"bob", "anthropic", "claude-haiku-4-5", false, `bob may not call provider "anthropic"`},
		// Matching is exact: a case variant is another identity.
		{"Alice", "openai", "gpt-4o-mini", false, ""},
	}
	for _, c := range cases {
		d := p.Allow(c.who, c.prov, c.model)
		if (d == nil) != c.allowed || (d != nil && !strings.Contains(d.Msg, c.want)) {
			t.Errorf("Allow(%q, %q, %q) = %v, want allowed=%v %q", c.who, c.prov, c.model, d, c.allowed, c.want)
		}
		if d != nil && d.Model != strings.Contains(d.Msg, "may not use model") {
			t.Errorf("Denied.Model = %v for %q", d.Model, d.Msg)
		}
	}
}

func TestNoPolicyAllowsAll(t *testing.T) {
	if d := (&Policies{}).Allow("anyone", "openai", "gpt-4o"); d != nil {
		t.Fatal(d)
	}
	f, err := Parse("p.yaml", []byte(minimal+"policies:\n  - identities: [bob]\n    providers: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := f.PolicySet().Allow("bob", "openai", "gpt-4o"); d == nil || !strings.Contains(d.Msg, "it may call no provider") {
		t.Fatalf("empty provider list: %v", d)
	}
	if d := f.PolicySet().Allow("carol", "openai", "gpt-4o"); d != nil {
		t.Fatalf("unnamed identity without a \"*\" policy: %v", d)
	}
}
