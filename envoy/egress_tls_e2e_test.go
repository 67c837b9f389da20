package envoy_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// An https provider is reached with its host name as SNI and its
// certificate checked against that name and the provider's own CA: the
// same server under a name its certificate lacks is refused, nothing is
// sent, nothing stays reserved, and the client gets an error that says so.
func TestEgressTLSChecksTheProviderName(t *testing.T) {
	p := testinfra.NewPKI(t, "") // server certificate: DNS localhost, IP 127.0.0.1
	cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	up := &fakellm.Server{ExpectKey: "sk-tls"}
	srv := httptest.NewUnstartedServer(up)
	var mu sync.Mutex
	var sni []string
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		mu.Lock()
		sni = append(sni, h.ServerName)
		mu.Unlock()
		return nil, nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	file := filepath.Join(t.TempDir(), "providers.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf(`providers:
  - {name: good, format: openai, base_url: "https://localhost:%[1]s", path_prefix: /good, api_key_env: TLS_KEY, ca_file: %[2]s}
  - {name: wrong-name, format: openai, base_url: "https://127.0.0.1:%[1]s", path_prefix: /wrong, api_key_env: TLS_KEY, ca_file: %[2]s}
`, port, p.CAFile)), 0o600)
	s := testenv.StartStack(t, testenv.StackOptions{ProvidersFile: file, EnvoyEnv: []string{"TLS_KEY=sk-tls"}})

	drain(t, post(t, s, "/good/v1/chat/completions", testenv.ClientKey, chatBody("gpt-4o-mini", true), with(usage, "x-user-id", "tls-user")), 200)
	s.WaitSpent(t, today("tls-user"), 1000*miniIn+10*miniOut)
	mu.Lock()
	if len(sni) == 0 || sni[0] != "localhost" {
		t.Fatalf("SNI sent: %q", sni)
	}
	mu.Unlock()

	resp := post(t, s, "/wrong/v1/chat/completions", testenv.ClientKey, chatBody("gpt-4o-mini", true), map[string]string{"x-user-id": "tls-wrong"})
	if er := decodeError(t, resp); resp.StatusCode != 503 || er.Error.Code != "provider_unreachable" {
		t.Fatalf("certificate for another name: %d %+v", resp.StatusCode, er.Error)
	}
	if n := len(up.Requests()); n != 1 {
		t.Fatalf("the provider received %d requests, want only the good one", n)
	}
	day := billing.Day(time.Now(), time.UTC)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		n, _ := s.RDB.HLen(t.Context(), "reserved:{tls-wrong}:"+day).Result()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the refused request still holds %d reservations", n)
		}
	}
	if got := s.Spent(t, today("tls-wrong")); got != 0 {
		t.Fatalf("an unsent request was billed %d", got)
	}
}

// An https provider that offers HTTP/2 gets it: twenty streams open at
// once reach it as HTTP/2 over far fewer connections than streams (each
// stream costs Envoy the client's connection only), and each is billed.
func TestEgressHTTP2SharesConnections(t *testing.T) {
	p := testinfra.NewPKI(t, "")
	cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	up := &fakellm.Server{ExpectKey: "sk-h2"}
	var mu sync.Mutex
	protos := map[string]int{}
	conns := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		protos[r.Proto]++
		mu.Unlock()
		up.ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	file := filepath.Join(t.TempDir(), "providers.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf(`providers:
  - {name: h2, format: openai, base_url: "https://localhost:%s", path_prefix: /, api_key_env: H2_KEY, ca_file: %s}
`, port, p.CAFile)), 0o600)
	s := testenv.StartStack(t, testenv.StackOptions{ProvidersFile: file, EnvoyEnv: []string{"H2_KEY=sk-h2"}})

	const n = 20
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			drain(t, post(t, s, "/v1/chat/completions", testenv.ClientKey, chatBody("gpt-4o-mini", true),
				with(usage, "x-user-id", "h2-user", "x-fake-delay-ms", "100")), 200)
		}()
	}
	wg.Wait()
	s.WaitSpent(t, today("h2-user"), n*(1000*miniIn+10*miniOut))
	mu.Lock()
	defer mu.Unlock()
	if protos["HTTP/2.0"] != n {
		t.Fatalf("requests by protocol: %v, want all %d over HTTP/2", protos, n)
	}
	if conns > n/4 {
		t.Fatalf("%d connections for %d concurrent streams", conns, n)
	}
	t.Logf("%d concurrent streams over %d HTTP/2 connection(s)", n, conns)
}
