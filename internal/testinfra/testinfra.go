// Package testinfra starts the real programs tests need that are not the
// firewall's own (redis-server, a PKI), on loopback ports, with the helpers
// every such harness shares. internal/testenv builds the firewall's stack
// on it; billing's tests use it alone, since testenv imports billing.
package testinfra

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Missing skips the test when a required program is absent, saying how to
// get it; under CI=true it fails instead, so CI can never pass by skipping.
func Missing(t testing.TB, what, howTo string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true but missing: %s", what, howTo)
	}
	t.Skipf("%s not found; %s", what, howTo)
}

// Ports are handed out below the kernel's ephemeral range (32768 and up
// by default), which outgoing connections draw from: a port taken from
// 127.0.0.1:0 could be given to another test's client socket between the
// check here and the server's bind. Each process starts at its own place
// in the range and walks it, so one process never hands out a port twice
// and concurrent test binaries rarely meet; every port is checked by
// binding it.
const (
	portLow  = 10000
	portHigh = 32000
)

var nextPort struct {
	sync.Mutex
	n int
}

// FreePort returns a loopback TCP port that was free a moment ago and is
// outside the range the kernel gives to outgoing connections.
func FreePort(t testing.TB) int {
	t.Helper()
	nextPort.Lock()
	defer nextPort.Unlock()
	if nextPort.n == 0 {
		nextPort.n = portLow + (os.Getpid()*7919)%(portHigh-portLow)
	}
	for range portHigh - portLow {
		p := nextPort.n
		if nextPort.n++; nextPort.n >= portHigh {
			nextPort.n = portLow
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return 0
}

// WaitTCP waits until something accepts connections on addr.
func WaitTCP(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	waitDial(t, "tcp", addr, within)
}

// WaitUnix waits until something accepts connections on a Unix socket.
func WaitUnix(t testing.TB, path string, within time.Duration) {
	t.Helper()
	waitDial(t, "unix", path, within)
}

func waitDial(t testing.TB, network, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout(network, addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listening on %s after %s", addr, within)
}

// RepoRoot is the module's root directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// LogBuffer collects a child process's output for failure reports.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func LookPath(name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}
