package mtls

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// handshake runs a TLS handshake against srv's configuration over a pipe,
// as client with cert, trusting pki's CA.
func handshake(t *testing.T, srv *Server, pki *testinfra.PKI, cert tls.Certificate) error {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(b, srv.Config())
		s.SetDeadline(time.Now().Add(5 * time.Second))
		done <- s.Handshake()
	}()
	c := tls.Client(a, &tls.Config{RootCAs: pki.CAPool, ServerName: "localhost", Certificates: []tls.Certificate{cert}})
	c.SetDeadline(time.Now().Add(5 * time.Second))
	cerr := c.Handshake()
	if serr := <-done; serr != nil {
		return serr
	}
	return cerr
}

func TestAllowListAndRotation(t *testing.T) {
	dir := t.TempDir()
	files := []string{filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")}
	install := func(p *testinfra.PKI) {
		for i, src := range []string{p.CertFile, p.KeyFile, p.CAFile} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(files[i]+".tmp", b, 0o600)
			os.Rename(files[i]+".tmp", files[i])
		}
	}
	old := testinfra.NewPKI(t, "")
	install(old)
	srv, err := NewServer(files[0], files[1], files[2], []string{"spiffe://test/ns/gw/*", "gateway.test"})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		san string
		ok  bool
	}{
		"allowed URI": {"spiffe://test/ns/gw/sa/envoy", true}, "allowed DNS": {"gateway.test", true},
		"other URI": {"spiffe://test/ns/app/sa/x", false}, "other DNS": {"evil.test", false}, "no SAN": {"", false},
	} {
		err := handshake(t, srv, old, old.IssueClient(t, c.san).Cert)
		if (err == nil) != c.ok {
			t.Errorf("%s: handshake error %v, want ok=%v", name, err, c.ok)
		}
	}

	// cert-manager renews: new files, a new CA. Within a second or so the
	// new CA's clients are admitted and the old one's are not.
	next := testinfra.NewPKI(t, "")
	install(next)
	time.Sleep(1100 * time.Millisecond)
	if err := handshake(t, srv, next, next.IssueClient(t, "gateway.test").Cert); err != nil {
		t.Errorf("after rotation, the new CA's client: %v", err)
	}
	if err := handshake(t, srv, next, old.IssueClient(t, "gateway.test").Cert); err == nil {
		t.Error("after rotation, the old CA's client is still admitted")
	}
	// A half-written renewal keeps the previous files in force.
	os.WriteFile(files[0], []byte("not a certificate"), 0o600)
	time.Sleep(1100 * time.Millisecond)
	if err := handshake(t, srv, next, next.IssueClient(t, "gateway.test").Cert); err != nil {
		t.Errorf("a broken certificate file replaced the working one: %v", err)
	}
}

func TestAllowListIsRequired(t *testing.T) {
	p := testinfra.NewPKI(t, "")
	if _, err := NewServer(p.CertFile, p.KeyFile, p.CAFile, nil); err == nil {
		t.Fatal("a CA alone was accepted as the allow-list")
	}
}
