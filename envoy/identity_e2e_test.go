package envoy_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
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
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{"KEYS_FILE=" + keys, "STREAM_CUTOFF=false"}})

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

// Mesh mode: Envoy terminates mTLS, the workload's SPIFFE ID holds the
// budget, and a forged x-forwarded-client-cert changes nothing.
func TestMeshIdentityOverMTLS(t *testing.T) {
	const workload = "spiffe://example.org/ns/billing/sa/reporter"
	p := testinfra.NewPKI(t, workload)
	o := envoy.Options{}
	o.TLS.CertFile, o.TLS.KeyFile, o.TLS.ClientCAFile = p.CertFile, p.KeyFile, p.CAFile
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{"IDENTITY_MODE=mesh", "TRUST_XFCC=true"}, Envoy: o})
	base := strings.Replace(s.Envoy.URL(), "http://", "https://", 1)

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: p.CAPool, Certificates: []tls.Certificate{p.Client}}}}
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
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.CAPool}}}
	if r, err := anon.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(seedBody)); err == nil {
		r.Body.Close()
		t.Fatalf("request without a client certificate answered %d", r.StatusCode)
	}
}

// The default mode takes the shared key and per-user keys side by side,
// so a team moves to per-user budgets one user at a time.
func TestSharedKeyAndPerUserKeysTogether(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(keys, []byte("keys:\n  - sha256: "+identity.HashKey("alice-secret")+"\n    user: alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opAddr := fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t))
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{
		"IDENTITY_MODE=shared", "KEYS_FILE=" + keys, "ADMIN_TOKEN=" + adminToken, "OPERATOR_ADDR=" + opAddr}})
	testinfra.WaitTCP(t, opAddr, 10*time.Second)

	// The seed's way: the shared key, and the caller names the user.
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-user-id": "team-a"})
	io.Copy(io.Discard, resp.Body)
	s.WaitSpent(t, today("team-a"), reqCost)

	// An operator-made key works at once beside it, and says nothing about
	// the identity mode, since this one accepts it.
	out, err := admin(t, opAddr, adminToken, "add-key", "mona", "0.01")
	if err != nil || strings.Contains(out, "WARNING") {
		t.Fatalf("add-key: %v %s", err, out)
	}
	mona := regexp.MustCompile(`key:\s+(\S+)`).FindStringSubmatch(out)[1]
	waitStatus(t, s, mona, 200)
	s.WaitSpent(t, today("mona"), reqCost)
	if r := post(t, s, "/v1/chat/completions", mona, seedBody, nil); r.Header.Get("x-aifirewall-budget-limit") != "0.01" {
		t.Fatalf("mona's own limit: %q", r.Header.Get("x-aifirewall-budget-limit"))
	}
	// A per-user key names its user: x-user-id cannot move the bill.
	if r := post(t, s, "/v1/chat/completions", mona, seedBody, map[string]string{"x-user-id": "team-a"}); r.StatusCode != 403 {
		t.Fatalf("per-user key naming another user: %d, want 403", r.StatusCode)
	}
	// Keys file keys too, sent the Anthropic way.
	r := send(t, s, "POST", "/v1/chat/completions", "", strings.NewReader(seedBody), map[string]string{"x-api-key": "alice-secret"})
	io.Copy(io.Discard, r.Body)
	if r.StatusCode != 200 {
		t.Fatalf("keys-file key: %d", r.StatusCode)
	}
	s.WaitSpent(t, today("alice"), reqCost)
	if r := post(t, s, "/v1/chat/completions", "not-a-key", seedBody, nil); r.StatusCode != 401 {
		t.Fatalf("unknown key: %d", r.StatusCode)
	}
}
