package envoy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// rogue speaks ext_proc to addr the way the reported 40-line client did:
// one RequestHeaders message for a chat completion, with the shared key and
// a made-up peer identity. It returns the reply, or the error that stopped it.
func rogue(t *testing.T, addr string, creds credentials.TransportCredentials) (*extprocv3.ProcessingResponse, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		return nil, err
	}
	hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
	err = stream.Send(&extprocv3.ProcessingRequest{
		Attributes: map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{
			"connection.uri_san_peer_certificate": structpb.NewStringValue("spiffe://cluster.local/ns/x/sa/anyone")}}},
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{
			Headers: []*corev3.HeaderValue{hv(":method", "POST"), hv(":path", "/v1/chat/completions"), hv(":authority", "localhost"),
				hv("authorization", "Bearer "+testenv.ClientKey), hv("content-type", "application/json"), hv("x-request-id", "rogue")}}}},
	})
	if err != nil {
		return nil, err
	}
	return stream.Recv()
}

// Next to Envoy (loopback, the default, or a Unix socket) anyone on the
// host can speak ext_proc, so the sidecar has nothing secret to say: it
// holds no provider key, and the reply to a rogue client with the shared
// key carries none.
func TestRogueExtProcClientGetsNoKey(t *testing.T) {
	for _, unix := range []bool{false, true} {
		s := testenv.StartStack(t, testenv.StackOptions{UnixSocket: unix})
		resp, err := rogue(t, s.Sidecar.GRPCAddr, insecure.NewCredentials())
		if err != nil {
			t.Fatalf("%s: %v", s.Sidecar.GRPCAddr, err)
		}
		if resp.GetRequestHeaders() == nil {
			t.Fatalf("the rogue's request was not admitted, so the test shows nothing: %v", resp)
		}
		raw, _ := proto.Marshal(resp)
		if bytes.Contains(raw, []byte(testenv.UpstreamKey)) {
			t.Fatalf("%s: the ext_proc reply carries the provider key", s.Sidecar.GRPCAddr)
		}
		// Envoy put the key on, after the sidecar: the provider got it.
		drain(t, post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, nil), 200)
		if got := s.Upstream.Requests()[0].Headers.Get("authorization"); got != "Bearer "+testenv.UpstreamKey {
			t.Fatalf("the provider got authorization %q", got)
		}
		if s.Relay.Checked() == 0 {
			t.Fatal("the relay checked no ext_proc reply")
		}
	}
}

// Across a network the ext_proc port takes only mutual TLS from an
// allowed identity: Envoy, with its certificate, gets through; a client
// without one, with another CA's, or with an identity not on the list is
// refused at the handshake.
func TestExtProcMutualTLS(t *testing.T) {
	const envoyID = "spiffe://test/ns/egress/sa/envoy"
	p := testinfra.NewPKIFor(t, "", "aifirewall.test")
	envoyCert := p.IssueClient(t, envoyID)
	other := p.IssueClient(t, "spiffe://test/ns/default/sa/app")
	foreign := testinfra.NewPKI(t, envoyID) // another CA, the allowed identity

	o := envoy.Options{}
	o.ExtProcTLS.CertFile, o.ExtProcTLS.KeyFile, o.ExtProcTLS.CAFile, o.ExtProcTLS.ServerName =
		envoyCert.CertFile, envoyCert.KeyFile, p.CAFile, "aifirewall.test"
	s := testenv.StartStack(t, testenv.StackOptions{Envoy: o, Env: []string{
		"EXTPROC_TLS_CERT_FILE=" + p.CertFile, "EXTPROC_TLS_KEY_FILE=" + p.KeyFile,
		"EXTPROC_TLS_CLIENT_CA_FILE=" + p.CAFile, "EXTPROC_TLS_ALLOWED_CLIENTS=spiffe://test/ns/egress/sa/*,gateway.test"}})

	drain(t, post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-user-id": "over-mtls"}), 200)
	s.WaitSpent(t, today("over-mtls"), 11*miniIn+12*miniOut)

	tlsTo := func(certs ...tls.Certificate) credentials.TransportCredentials {
		return credentials.NewTLS(&tls.Config{RootCAs: p.CAPool, ServerName: "aifirewall.test", Certificates: certs})
	}
	for name, creds := range map[string]credentials.TransportCredentials{
		"plaintext":             insecure.NewCredentials(),
		"no client certificate": tlsTo(),
		"another CA":            tlsTo(foreign.Client),
		"identity not allowed":  tlsTo(other.Cert),
	} {
		if resp, err := rogue(t, s.Sidecar.GRPCAddr, creds); err == nil {
			t.Errorf("%s: the sidecar answered: %v", name, resp)
		}
	}
	// The control: the allowed identity is answered, so the refusals above
	// are the allow-list's doing.
	if _, err := rogue(t, s.Sidecar.GRPCAddr, tlsTo(envoyCert.Cert)); err != nil {
		t.Fatalf("the allowed identity was refused: %v", err)
	}
}

// The sidecar will not serve ext_proc in the clear beyond loopback.
func TestExtProcRefusesAnOpenPort(t *testing.T) {
	base := []string{"PATH=" + os.Getenv("PATH"), "ENV_FILE=/nonexistent", "BUDGET_STORE=memory",
		fmt.Sprintf("ADMIN_ADDR=127.0.0.1:%d", testinfra.FreePort(t))}
	for _, listen := range []string{":50051", "0.0.0.0:50051", "[::]:50051"} {
		cmd := exec.Command(testenv.SidecarBinary(t))
		cmd.Env = append(base, "LISTEN_ADDR="+listen)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "LISTEN_ADDR") || !strings.Contains(string(out), "EXTPROC_TLS_") {
			t.Errorf("LISTEN_ADDR=%s: %v\n%s", listen, err, out)
		}
	}
}

// A provider key in a file (a mounted Secret) is rotated by swapping the
// Secret's ..data link, as the kubelet does: Envoy presents the new key
// within seconds, without a restart.
func TestProviderKeyRotatesThroughSDS(t *testing.T) {
	up := &fakellm.Server{}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	mount := filepath.Join(t.TempDir(), "secret")
	version := func(n int, key string) {
		dir := filepath.Join(mount, fmt.Sprintf("..v%d", n))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "openai-key"), []byte(key+"\n"), 0o600)
		tmp := filepath.Join(mount, "..data_tmp")
		if err := os.Symlink(filepath.Base(dir), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(mount, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version(1, "sk-first")
	if err := os.Symlink("..data/openai-key", filepath.Join(mount, "openai-key")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "providers.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf("providers:\n  - {name: openai, format: openai, base_url: %q, path_prefix: /, api_key_file: %s}\n",
		srv.URL, filepath.Join(mount, "openai-key"))), 0o600)
	s := testenv.StartStack(t, testenv.StackOptions{ProvidersFile: file})
	lastKey := func() string {
		drain(t, post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, nil), 200)
		reqs := up.Requests()
		return reqs[len(reqs)-1].Headers.Get("authorization")
	}
	if got := lastKey(); got != "Bearer sk-first" {
		t.Fatalf("first key: %q", got)
	}
	version(2, "sk-second")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		got := lastKey()
		if got == "Bearer sk-second" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the rotation Envoy still sends %q", got)
		}
	}
}
