// Package mtls is the ext_proc server's side of mutual TLS: whoever speaks
// ext_proc admits requests and names identities, so across a network the
// sidecar answers only clients whose certificate a configured CA signed and
// whose identity (a URI or DNS SAN) is on an allow-list.
package mtls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/aifirewall/aifirewall/internal/glob"
)

// Server holds the files of the server's certificate and of the client CA,
// and the identities allowed to connect. Files are re-read when they change
// (checked at most once a second, on a handshake), so certificates that
// cert-manager renews apply without a restart.
type Server struct {
	certFile, keyFile, caFile string
	allowed                   []string

	mu      sync.Mutex
	checked time.Time
	raw     [3][]byte
	cert    tls.Certificate
	pool    *x509.CertPool
}

// NewServer loads the files now; allowed are URI or DNS SANs, where "*"
// matches any run of characters ("spiffe://cluster.local/ns/gw/sa/*").
func NewServer(certFile, keyFile, caFile string, allowed []string) (*Server, error) {
	if len(allowed) == 0 {
		return nil, errors.New("name the allowed clients (their URI or DNS SANs): a CA alone admits every certificate it ever signed")
	}
	s := &Server{certFile: certFile, keyFile: keyFile, caFile: caFile, allowed: allowed}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Config is the tls.Config of the gRPC listener.
func (s *Server) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if time.Since(s.checked) > time.Second {
				s.checked = time.Now()
				// A half-written renewal keeps the previous files in force.
				_ = s.reloadLocked()
			}
			return &tls.Config{
				MinVersion:       tls.VersionTLS12,
				Certificates:     []tls.Certificate{s.cert},
				ClientAuth:       tls.RequireAndVerifyClientCert,
				ClientCAs:        s.pool,
				NextProtos:       []string{"h2"},
				VerifyConnection: s.verify,
			}, nil
		},
	}
}

// verify admits a client whose verified leaf certificate carries an
// allowed identity.
func (s *Server) verify(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errors.New("no verified client certificate")
	}
	leaf := cs.VerifiedChains[0][0]
	ids := append([]string{}, leaf.DNSNames...)
	for _, u := range leaf.URIs {
		ids = append(ids, u.String())
	}
	for _, id := range ids {
		for _, a := range s.allowed {
			if glob.Match(a, id) {
				return nil
			}
		}
	}
	return fmt.Errorf("client certificate %v is not among the allowed ext_proc clients", ids)
}

func (s *Server) reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked = time.Now()
	return s.reloadLocked()
}

func (s *Server) reloadLocked() error {
	var raw [3][]byte
	for i, f := range []string{s.certFile, s.keyFile, s.caFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		raw[i] = b
	}
	if bytes.Equal(raw[0], s.raw[0]) && bytes.Equal(raw[1], s.raw[1]) && bytes.Equal(raw[2], s.raw[2]) {
		return nil
	}
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return fmt.Errorf("server certificate %s / key %s: %w", s.certFile, s.keyFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw[2]) {
		return fmt.Errorf("client CA %s: no PEM certificate in it", s.caFile)
	}
	s.raw, s.cert, s.pool = raw, cert, pool
	return nil
}
