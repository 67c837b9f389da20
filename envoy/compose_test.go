package envoy_test

import (
	"os"
	"os/exec"
	"path/filepath"
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
	if gen.Environment["EXTPROC_ADDR"] != "aifirewall:"+strings.Split(side.Environment["LISTEN_ADDR"], ":")[1] {
		t.Fatalf("Envoy reaches the sidecar at %q but it listens on %q", gen.Environment["EXTPROC_ADDR"], side.Environment["LISTEN_ADDR"])
	}
	if gen.EnvFile != ".env" || side.EnvFile != ".env" {
		t.Fatal("sidecar and envoy-config must read the same .env")
	}

	out := filepath.Join(t.TempDir(), "envoy.yaml")
	args := append([]string{}, gen.Command...)
	args[len(args)-1] = out // -o /config/envoy.yaml, redirected here
	cmd := exec.Command(testenv.SidecarBinary(t), args...)
	cmd.Env = []string{"ENV_FILE=" + filepath.Join(root, ".env.example")}
	for k, v := range gen.Environment {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("envoy-config: %v\n%s", err, b)
	}
	cfg, _ := os.ReadFile(out)
	for _, want := range []string{"openrouter.ai", "aifirewall", "port_value: 8000", "prefix_rewrite: /api/"} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("generated config lacks %q", want)
		}
	}
	// Envoy itself checks the file.
	if b, err := exec.Command(testenv.EnvoyBinary(t), "--mode", "validate", "-c", out, "--disable-hot-restart").CombinedOutput(); err != nil {
		t.Fatalf("envoy rejects the compose configuration: %v\n%s", err, b)
	}
}
