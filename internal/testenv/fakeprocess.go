package testenv

import (
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

var fakellmBin binary

// FakeProvider is cmd/fakellm in a process of its own: load tests with
// thousands of open streams keep its connections out of the test
// process's file limit.
type FakeProvider struct {
	URL string
	cmd *exec.Cmd
}

// StartFakeProvider runs cmd/fakellm on a free loopback port.
func StartFakeProvider(t testing.TB) *FakeProvider {
	t.Helper()
	return StartFakeProviderTLS(t, nil)
}

// StartFakeProviderTLS runs it over HTTPS (HTTP/2 offered) with pki's
// server certificate, named localhost in its URL; nil is plain HTTP.
func StartFakeProviderTLS(t testing.TB, pki *testinfra.PKI) *FakeProvider {
	t.Helper()
	bin := fakellmBin.build(t, "./cmd/fakellm", false)
	port := testinfra.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	f := &FakeProvider{URL: "http://" + addr, cmd: exec.Command(bin, "-addr", addr)}
	if pki != nil {
		f.URL = fmt.Sprintf("https://localhost:%d", port)
		f.cmd.Args = append(f.cmd.Args, "-tls-cert", pki.CertFile, "-tls-key", pki.KeyFile)
	}
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.cmd.Process.Kill(); f.cmd.Wait() })
	testinfra.WaitTCP(t, addr, 10*time.Second)
	return f
}

// PID is the process's id.
func (f *FakeProvider) PID() int { return f.cmd.Process.Pid }
