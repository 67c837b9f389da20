package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// binary is a command of this module built once per test process.
type binary struct {
	once sync.Once
	path string
	err  error
}

var sidecarBin, passthroughBin binary

// build compiles the package pkg (a ./cmd path) once, with the race
// detector when race is set, and returns the binary's path.
func (b *binary) build(t testing.TB, pkg string, race bool) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "aifirewall-bin")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, filepath.Base(pkg))
		args := []string{"build", "-o", b.path}
		if race {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Dir = testinfra.RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// SidecarBinary builds cmd/aifirewall once per test process.
func SidecarBinary(t testing.TB) string {
	t.Helper()
	return sidecarBin.build(t, "./cmd/aifirewall", raceEnabled)
}

// Sidecar is a running aifirewall process.
type Sidecar struct {
	t         testing.TB
	GRPCAddr  string
	AdminAddr string
	env       []string
	cmd       *exec.Cmd
	exited    chan error
	log       testinfra.LogBuffer
}

// StartSidecar runs the sidecar binary with env (KEY=value) added to a
// minimal environment; listen addresses are chosen here.
func StartSidecar(t testing.TB, env ...string) *Sidecar {
	t.Helper()
	s := &Sidecar{t: t}
	spool := filepath.Join(t.TempDir(), "spool", "settlements.jsonl")
	// A port found free can be taken before the sidecar, which loads its
	// tokenizer first, binds it (another test's outgoing connection): then
	// it starts again on new ports.
	for attempt := 1; ; attempt++ {
		s.GRPCAddr = fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t))
		s.AdminAddr = fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t))
		s.env = append([]string{
			"PATH=" + os.Getenv("PATH"),
			"ENV_FILE=/nonexistent", // never pick up a developer's .env
			"LISTEN_ADDR=" + s.GRPCAddr,
			"ADMIN_ADDR=" + s.AdminAddr,
			"LOG_LEVEL=debug",
			"SHUTDOWN_TIMEOUT=10s",
			"SHUTDOWN_MIN_DRAIN=0s", // no load balancer in front to wait for
			// Survives restarts of this sidecar, like a volume would.
			"SPOOL_FILE=" + spool,
		}, env...)
		if err := s.start(); err == nil {
			break
		} else if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		s.Kill()
		if strings.Contains(s.log.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector reported a data race in the sidecar:\n%s", testinfra.Tail(s.log.String(), 80))
		}
		if t.Failed() {
			t.Logf("sidecar output (tail):\n%s", testinfra.Tail(s.log.String(), 40))
		}
	})
	return s
}

// Start (re)starts the process and waits for /healthz.
func (s *Sidecar) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *Sidecar) start() error {
	s.cmd = exec.Command(SidecarBinary(s.t))
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = &s.log, &s.log
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start sidecar: %w", err)
	}
	s.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(s.cmd, s.exited)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + s.AdminAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case err := <-s.exited:
			s.cmd = nil
			return fmt.Errorf("sidecar exited at start: %v\n%s", err, testinfra.Tail(s.log.String(), 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("sidecar not healthy after 20s:\n%s", testinfra.Tail(s.log.String(), 20))
}

// Terminate sends SIGTERM and waits for the exit; it returns the exit error.
func (s *Sidecar) Terminate(within time.Duration) error {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited:
		s.cmd = nil
		return err
	case <-time.After(within):
		s.t.Fatalf("sidecar still running %s after SIGTERM", within)
		return nil
	}
}

// Kill ends the process at once (a crash).
func (s *Sidecar) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Log is what the sidecar printed.
func (s *Sidecar) Log() string { return s.log.String() }
