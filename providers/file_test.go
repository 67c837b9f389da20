package providers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/provider"
)

func TestExampleFileParses(t *testing.T) {
	f, err := Load("../deploy/providers.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Providers) != 3 || f.Providers[1].Kind != provider.Anthropic || f.Providers[2].URL.Path != "/api" {
		t.Fatalf("providers = %+v", f.Providers)
	}
	// The README shows the example as it is.
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, _ := os.ReadFile("../deploy/providers.example.yaml")
	if !strings.Contains(string(readme), string(example)) {
		t.Fatal("README.md does not show deploy/providers.example.yaml verbatim")
	}
}

const minimal = `providers:
  - name: openai
    format: openai
    base_url: https://api.openai.com
    hosts: [api.openai.com]
    api_key_env: OPENAI_API_KEY
`

// Every mistake names the file, the line and the field.
func TestParseErrorsNameTheLine(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"unknown field", minimal + "    hsots: [x]\n", `p.yaml:7: unknown field "hsots"`},
		{"repeated key", minimal + "    format: anthropic\n", `p.yaml:7:`},
		{"wrong type", strings.Replace(minimal, "hosts: [api.openai.com]", "hosts: api.openai.com", 1), `p.yaml:5:`},
		{"format", strings.Replace(minimal, "format: openai", "format: azure", 1), `p.yaml:3: providers[0].format: "azure" is not one of`},
		{"base url", strings.Replace(minimal, "https://api.openai.com", "ftp://x", 1), `p.yaml:4: providers[0].base_url:`},
		{"url credentials", strings.Replace(minimal, "https://api.openai.com", "https://u:p@api.openai.com", 1), `p.yaml:4: providers[0].base_url:`},
		{"host with port", strings.Replace(minimal, "[api.openai.com]", "[api.openai.com, \"api.openai.com:443\"]", 1), `p.yaml:5: providers[0].hosts[1]:`},
		{"no route", strings.Replace(minimal, "    hosts: [api.openai.com]\n", "", 1), `p.yaml:2: providers[0]: give hosts, a path_prefix, or both`},
		{"key in both", minimal + "    api_key_file: /k\n", `p.yaml:2: providers[0]: set one of api_key_env and api_key_file for "openai", not both`},
		{"credentials in the URL are not printed", strings.Replace(minimal, "https://api.openai.com", "https://user:hunter2@api.openai.com/v1?key=sk-leak", 1), `"https://redacted@api.openai.com/v1?key=redacted" must be`},
		{"dot segment", minimal + "    path_prefix: /a/../b\n", `p.yaml:7: providers[0].path_prefix:`},
		{"trailing slash", minimal + "    path_prefix: /openai/\n", `providers[0].path_prefix:`},
		{"escape", minimal + "    path_prefix: /open%61i\n", `providers[0].path_prefix:`},
		{"bad name", strings.Replace(minimal, "name: openai", "name: Open_AI", 1), `p.yaml:2: providers[0].name:`},
		{"price", minimal + "    prices:\n      gpt-4o: {input: 1e-3, output: \"1\"}\n", `p.yaml:8: providers[0].prices.gpt-4o: input:`},
		{"price too fine", minimal + "    prices:\n      gpt-4o: {input: \"0.0000001\", output: \"1\"}\n", `finer than a nano-dollar`},
		{"ca on http", strings.Replace(minimal, "https://", "http://", 1) + "    ca_file: /ca.pem\n", `p.yaml:7: providers[0].ca_file:`},
		{"twice", minimal + strings.Replace(strings.TrimPrefix(minimal, "providers:\n"), "api.openai.com]", "other.example]", 1), `p.yaml:7: providers[1].name: provider "openai" is listed twice`},
		{"host twice", minimal + strings.Replace(strings.TrimPrefix(minimal, "providers:\n"), "name: openai", "name: other", 1), `p.yaml:10: providers[1].hosts[0]: host "api.openai.com" is already served by provider "openai"`},
		{"a key written in the file", minimal + "    api_key: sk-do-not-echo\n", `p.yaml:7: unknown field "api_key"`},
		{"none", "providers: []\n", `p.yaml:1: providers: list at least one provider`},
		{"policy unknown provider", minimal + "policies:\n  - identities: [a]\n    providers: [openia]\n", `p.yaml:9: policies[0].providers[0]: no provider is named "openia"`},
		{"policy no identities", minimal + "policies:\n  - providers: [openai]\n", `p.yaml:8: policies[0]: list the identities`},
		{"policy empty models", minimal + "policies:\n  - identities: [a]\n    models: []\n", `policies[0].models: list at least one model`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "sk-do-not-echo") ||
				strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "sk-leak") {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestProviderPricesOverTheSharedTable(t *testing.T) {
	f, err := Parse("p.yaml", []byte(minimal+"    prices:\n      gpt-4o-mini: {input: \"0.16\", output: \"0.64\", cache_read: \"0.08\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	base, err := billing.LoadPrices("", billing.Price{Input: 1, Output: 1})
	if err != nil {
		t.Fatal(err)
	}
	own, err := f.Providers[0].PriceTable(base)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := own.Lookup("gpt-4o-mini"); p != (billing.Price{Input: 160, Output: 640, CacheRead: 80}) {
		t.Fatalf("own price = %+v", p)
	}
	if p, _ := base.Lookup("gpt-4o-mini"); p.Input != 150 {
		t.Fatalf("shared table changed: %+v", p)
	}
	if a, _ := own.Lookup("gpt-4o"); a != func() billing.Price { p, _ := base.Lookup("gpt-4o"); return p }() {
		t.Fatal("a model without its own price must keep the shared one")
	}
}

// A key file that is empty at start is refused, as a missing one is: Envoy
// (or the sidecar) would otherwise send requests with an empty key.
func TestEmptyKeyFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"empty": "", "blank": " \n", "two lines": "a\nb\n"} {
		f := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		os.WriteFile(f, []byte(content), 0o600)
		if _, err := ReadKeyFile(f); err == nil {
			t.Errorf("%s: ReadKeyFile accepted it", name)
		}
		p := Provider{Name: "x", APIKeyFile: f}
		if _, err := p.Credential(); err == nil {
			t.Errorf("%s: Credential accepted it", name)
		}
	}
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("sk-1\n"), 0o600)
	if k, err := ReadKeyFile(good); err != nil || k != "sk-1" {
		t.Errorf("a good key file: %q %v", k, err)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://api.openai.com/v1":                 "https://api.openai.com/v1",
		"https://u:secret@api.openai.com/v1?key=sk": "https://redacted@api.openai.com/v1?key=redacted",
		"https://api.openai.com/?a=1&b=sk-x#frag":   "https://api.openai.com/?a=redacted&b=redacted",
		"http://[::1]:80%zz@x?k=sk":                 "http://[::1]:80%zz…(redacted)",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
