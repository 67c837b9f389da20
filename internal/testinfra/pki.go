package testinfra

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PKI is a throwaway CA with a server certificate for 127.0.0.1 (and
// localhost, or the names given) and a client certificate, as PEM files and
// as Go values.
type PKI struct {
	CAPool                    *x509.CertPool
	Client                    tls.Certificate
	CAFile, CertFile, KeyFile string

	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

// ClientCert is a client certificate issued by a PKI, as files and as a
// Go value.
type ClientCert struct {
	CertFile, KeyFile string
	Cert              tls.Certificate
}

// IssueClient issues another client certificate, with san as its URI SAN
// (a SPIFFE ID) or, when it has no scheme, its DNS SAN.
func (p *PKI) IssueClient(t testing.TB, san string) ClientCert {
	t.Helper()
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "client"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	switch {
	case strings.Contains(san, "://"):
		u, err := url.Parse(san)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	case san != "":
		tmpl.DNSNames = []string{san}
	}
	p.serial++
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(p.serial), time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	name := fmt.Sprintf("client-%d", p.serial)
	c := ClientCert{CertFile: filepath.Join(p.dir, name+".pem"), KeyFile: filepath.Join(p.dir, name+"-key.pem"),
		Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
	if err := os.WriteFile(c.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// NewPKI issues the certificates; clientURI, when set, is the client
// certificate's URI SAN (a SPIFFE ID).
func NewPKI(t testing.TB, clientURI string) *PKI {
	t.Helper()
	return NewPKIFor(t, clientURI, "localhost")
}

// NewPKIFor is NewPKI with the server certificate's DNS names.
func NewPKIFor(t testing.TB, clientURI string, serverNames ...string) *PKI {
	t.Helper()
	dir := t.TempDir()
	p := &PKI{}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p.dir, p.ca, p.caKey, p.serial = dir, ca, caKey, 100
	p.CAPool = x509.NewCertPool()
	p.CAPool.AddCert(ca)
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
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	p.CAFile = pemFile("ca.pem", "CERTIFICATE", caDER)
	srvDER, srvKey := issue(2, &x509.Certificate{Subject: pkix.Name{CommonName: "server"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: serverNames,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	p.CertFile = pemFile("server.pem", "CERTIFICATE", srvDER)
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	p.KeyFile = pemFile("server-key.pem", "EC PRIVATE KEY", keyDER)
	client := &x509.Certificate{Subject: pkix.Name{CommonName: "client"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if clientURI != "" {
		u, err := url.Parse(clientURI)
		if err != nil {
			t.Fatal(err)
		}
		client.URIs = []*url.URL{u}
	}
	cliDER, cliKey := issue(3, client)
	p.Client = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}
	return p
}
