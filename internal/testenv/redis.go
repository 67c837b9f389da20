package testenv

import (
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// Redis is a real redis-server on a loopback port, without persistence.
type Redis struct {
	t    testing.TB
	bin  string
	Port int
	cmd  *exec.Cmd
	log  logBuffer
}

// StartRedis starts redis-server for the test and stops it at cleanup.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := lookPath("redis-server")
	if bin == "" {
		Missing(t, "redis-server", "install it with `apt-get install redis-server`")
	}
	r := &Redis{t: t, bin: bin, Port: FreePort(t)}
	r.Start()
	t.Cleanup(func() { r.Stop() })
	return r
}

// Addr is host:port.
func (r *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// URL is the redis:// URL of database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Start (re)starts the server on the same port.
func (r *Redis) Start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no")
	r.cmd.Stdout, r.cmd.Stderr = &r.log, &r.log
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	WaitTCP(r.t, r.Addr(), 10*time.Second)
}

// Stop kills the server (SIGKILL: a crash, not a shutdown).
func (r *Redis) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}
