package envoy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

func TestPerUserKeys(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.yaml")
	write := func(body string) {
		if err := os.WriteFile(keys+".tmp", []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Rename(keys+".tmp", keys) // atomic, as a config map update is
	}
	write("keys:\n  - sha256: " + identity.HashKey("alice-secret") + "\n    user: alice\n    daily_limit: \"0.000005\"\n" +
		"  - sha256: " + identity.HashKey("bob-secret") + "\n    user: bob\n")
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{"KEYS_FILE=" + keys}})

	// The key decides the user; the shared key is not accepted in this mode.
	resp := post(t, s, "/v1/chat/completions", "alice-secret", seedBody, nil)
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("x-aifirewall-budget-limit") != "0.000005" {
		t.Fatalf("alice: %d, limit header %q", resp.StatusCode, resp.Header.Get("x-aifirewall-budget-limit"))
	}
	s.WaitSpent(t, today("alice"), reqCost)
	if resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, nil); resp.StatusCode != 401 {
		t.Fatalf("shared key under per-user keys: %d", resp.StatusCode)
	}
	// x-user-id cannot move the bill to someone else.
	resp = post(t, s, "/v1/chat/completions", "bob-secret", seedBody, map[string]string{"x-user-id": "alice"})
	if resp.StatusCode != 403 || decodeError(t, resp).Error.Code != "user_override_forbidden" {
		t.Fatalf("forged x-user-id: %d", resp.StatusCode)
	}
	// Alice's own limit applies: she is over it now.
	if resp := post(t, s, "/v1/chat/completions", "alice-secret", seedBody, nil); resp.StatusCode != 402 {
		t.Fatalf("alice over her own limit: %d", resp.StatusCode)
	}
	// A key added to the file works without a restart.
	write("keys:\n  - sha256: " + identity.HashKey("carol-secret") + "\n    user: carol\n")
	waitStatus(t, s, "carol-secret", 200)
	if r := post(t, s, "/v1/chat/completions", "bob-secret", seedBody, nil); r.StatusCode != 401 {
		t.Fatalf("removed key still accepted: %d", r.StatusCode)
	}
}

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate carrying a SPIFFE ID.
type pki struct {
	dir                       string
	caPool                    *x509.CertPool
	client                    tls.Certificate
	caFile, certFile, keyFile string
}

func newPKI(t *testing.T, spiffe string) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(ca)
	issue := func(serial int64, tmpl *x509.Certificate) ([]byte, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(serial), time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	pemFile := func(name, typ string, der []byte) string {
		f := filepath.Join(p.dir, name)
		os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
		return f
	}
	p.caFile = pemFile("ca.pem", "CERTIFICATE", caDER)
	srvDER, srvKey := issue(2, &x509.Certificate{Subject: pkix.Name{CommonName: "gateway"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	p.certFile = pemFile("server.pem", "CERTIFICATE", srvDER)
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	p.keyFile = pemFile("server-key.pem", "EC PRIVATE KEY", keyDER)
	id, _ := url.Parse(spiffe)
	cliDER, cliKey := issue(3, &x509.Certificate{Subject: pkix.Name{CommonName: "workload"},
		URIs: []*url.URL{id}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	p.client = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}
	return p
}

// Mesh mode: Envoy terminates mTLS, the workload's SPIFFE ID holds the
// budget, and a forged x-forwarded-client-cert changes nothing.
func TestMeshIdentityOverMTLS(t *testing.T) {
	const workload = "spiffe://example.org/ns/billing/sa/reporter"
	p := newPKI(t, workload)
	o := envoy.Options{}
	o.TLS.CertFile, o.TLS.KeyFile, o.TLS.ClientCAFile = p.certFile, p.keyFile, p.caFile
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{"IDENTITY_MODE=mesh", "TRUST_XFCC=true"}, Envoy: o})
	base := strings.Replace(s.Envoy.URL(), "http://", "https://", 1)

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: p.caPool, Certificates: []tls.Certificate{p.client}}}}
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(seedBody))
	req.Header.Set("x-forwarded-client-cert", "By=spiffe://evil;URI=spiffe://example.org/ns/other/sa/victim")
	req.Header.Set("x-user-id", workload)
	req.Header.Set("content-type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("workload request: %d", resp.StatusCode)
	}
	s.WaitSpent(t, today(workload), reqCost)
	if got := s.Spent(t, today("spiffe://example.org/ns/other/sa/victim")); got != 0 {
		t.Fatalf("forged XFCC billed the victim %d", got)
	}
	// Without a client certificate there is no connection at all.
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.caPool}}}
	if r, err := anon.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(seedBody)); err == nil {
		r.Body.Close()
		t.Fatalf("request without a client certificate answered %d", r.StatusCode)
	}
}
