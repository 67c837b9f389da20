package testenv

import (
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// Passthrough is a running cmd/extproc-passthrough: an ext_proc server
// that changes nothing.
type Passthrough struct {
	Addr string
	cmd  *exec.Cmd
}

// PID is the process's id, for reading its CPU time.
func (p *Passthrough) PID() int { return p.cmd.Process.Pid }

// StartPassthrough builds (once per test process) and runs the
// pass-through ext_proc server on a free loopback port.
func StartPassthrough(t testing.TB) *Passthrough {
	t.Helper()
	bin := passthroughBin.build(t, "./cmd/extproc-passthrough", false)
	p := &Passthrough{Addr: fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t))}
	p.cmd = exec.Command(bin, "-addr", p.Addr)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	testinfra.WaitTCP(t, p.Addr, 10*time.Second)
	return p
}
