package envoy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

type composeFile struct {
	Services map[string]struct {
		Image       string            `json:"image"`
		Command     []string          `json:"command"`
		Environment map[string]string `json:"environment"`
		EnvFile     string            `json:"env_file"`
		Volumes     []string          `json:"volumes"`
		Ports       []string          `json:"ports"`
		User        string            `json:"user"`
	} `json:"services"`
}

// There is no Docker engine here, so the compose file's configuration is
// run with the same binaries: the envoy-config service's command and
// environment, with .env copied from .env.example as the README says, must
// produce a configuration the pinned Envoy accepts.
func TestComposeConfigurationIsValid(t *testing.T) {
	root := testinfra.RepoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	envoySvc, gen, side := c.Services["envoy"], c.Services["envoy-config"], c.Services["aifirewall"]
	if !strings.HasPrefix(envoySvc.Image, "envoyproxy/envoy:v1.40.") {
		t.Fatalf("envoy image %q is not pinned to 1.40.x", envoySvc.Image)
	}
	// Envoy and the sidecar meet on a Unix socket in a volume only they
	// mount: nothing else can speak ext_proc.
	sock := side.Environment["LISTEN_ADDR"]
	if !strings.HasPrefix(sock, "unix:/run/aifirewall/") || gen.Environment["EXTPROC_ADDR"] != sock {
		t.Fatalf("Envoy reaches the sidecar at %q but it listens on %q", gen.Environment["EXTPROC_ADDR"], sock)
	}
	for name, svc := range map[string][]string{"aifirewall": side.Volumes, "envoy": envoySvc.Volumes} {
		if !slices.Contains(svc, "extproc:/run/aifirewall") {
			t.Errorf("%s does not mount the socket's volume: %v", name, svc)
		}
	}
	for name, s := range c.Services {
		if name != "aifirewall" && name != "envoy" && slices.ContainsFunc(s.Volumes, func(v string) bool { return strings.HasPrefix(v, "extproc:") }) {
			t.Errorf("%s mounts the ext_proc socket's volume", name)
		}
	}
	// The sidecar holds no provider key; Envoy and its generator do.
	if v, ok := side.Environment["UPSTREAM_API_KEY"]; !ok || v != "" {
		t.Errorf("the sidecar's UPSTREAM_API_KEY is not cleared: %q", v)
	}
	if gen.EnvFile != ".env" || side.EnvFile != ".env" || envoySvc.EnvFile != ".env" {
		t.Fatal("sidecar, envoy-config and envoy must read the same .env")
	}
	// Published on loopback unless widened; Envoy's admin never leaves it.
	if len(envoySvc.Ports) != 1 || envoySvc.Ports[0] != "${AIFIREWALL_BIND:-127.0.0.1}:8000:8000" {
		t.Errorf("envoy's ports: %v", envoySvc.Ports)
	}
	if !strings.HasPrefix(gen.Environment["ENVOY_ADMIN_ADDR"], "127.0.0.1:") {
		t.Errorf("Envoy's admin listens on %q", gen.Environment["ENVOY_ADMIN_ADDR"])
	}

	// The quick start's .env (from .env.example) with a provider key set.
	example, err := os.ReadFile(filepath.Join(root, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	const key = "sk-or-compose-test"
	envFile := filepath.Join(t.TempDir(), ".env")
	os.WriteFile(envFile, []byte(strings.Replace(string(example), "UPSTREAM_API_KEY=\n", "UPSTREAM_API_KEY="+key+"\n", 1)), 0o600)
	dir := t.TempDir()
	out := filepath.Join(dir, "envoy.yaml")
	args := append([]string{}, gen.Command...)
	args[len(args)-1] = out // -o /config/envoy.yaml, redirected here
	cmd := exec.Command(testenv.SidecarBinary(t), args...)
	cmd.Env = []string{"ENV_FILE=" + envFile}
	for k, v := range gen.Environment {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("envoy-config: %v\n%s", err, b)
	}
	cfg, _ := os.ReadFile(out)
	for _, want := range []string{"openrouter.ai", "aifirewall", "port_value: 8000", "prefix_rewrite: /api/",
		"credential_injector.v3.CredentialInjector", filepath.Join(dir, "sds-default.yaml")} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("generated config lacks %q", want)
		}
	}
	sds, err := os.ReadFile(filepath.Join(dir, "sds-default.yaml"))
	if err != nil || !strings.Contains(string(sds), "environment_variable: UPSTREAM_API_KEY") {
		t.Errorf("SDS file: %v\n%s", err, sds)
	}
	for name, b := range map[string][]byte{"envoy.yaml": cfg, "sds-default.yaml": sds} {
		if strings.Contains(string(b), key) {
			t.Errorf("%s holds the provider key", name)
		}
	}
	// Envoy itself checks the file, with the key in its environment.
	validate := exec.Command(testenv.EnvoyBinary(t), "--mode", "validate", "-c", out, "--disable-hot-restart")
	validate.Env = append(os.Environ(), "UPSTREAM_API_KEY="+key)
	if b, err := validate.CombinedOutput(); err != nil {
		t.Fatalf("envoy rejects the compose configuration: %v\n%s", err, b)
	}
	// An empty key file or an unset key variable stops the generator, as
	// Envoy would otherwise send requests with an empty key.
	empty := filepath.Join(t.TempDir(), "key")
	os.WriteFile(empty, nil, 0o600)
	for _, source := range []string{"api_key_file: " + empty, "api_key_env: AIFW_TEST_NO_SUCH_KEY"} {
		providers := filepath.Join(t.TempDir(), "providers.yaml")
		os.WriteFile(providers, []byte("providers:\n  - {name: openai, format: openai, base_url: https://api.openai.com, path_prefix: /, "+source+"}\n"), 0o600)
		cmd := exec.Command(testenv.SidecarBinary(t), "envoy-config", "-o", filepath.Join(t.TempDir(), "envoy.yaml"))
		cmd.Env = []string{"ENV_FILE=/nonexistent", "PROVIDERS_FILE=" + providers}
		if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "provider openai") {
			t.Errorf("%s: envoy-config did not refuse: %v\n%s", source, err, b)
		}
	}
}
