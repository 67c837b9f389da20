package envoy_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

var b64 = base64.RawURLEncoding.EncodeToString

// signJWT makes a compact JWS: RS256 with key, or alg none.
func signJWT(t *testing.T, key *rsa.PrivateKey, header, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	signing := b64(h) + "." + b64(c)
	if header["alg"] == "none" {
		return signing + "."
	}
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + b64(sig)
}

// jwksFile writes key's public half as a JWKS.
func jwksFile(t *testing.T, key *rsa.PrivateKey, kid string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes())}}})
	p := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(p, b, 0o600)
	return p
}

// Callers named by their identity provider's token, verified by Envoy's
// jwt_authn and taken by the firewall from its metadata only: a valid
// token is billed to its subject and its groups' budgets and never reaches
// the provider; expired, forged, wrong-audience, "alg: none" and missing
// tokens get 401 saying why, in the OpenAI error shape; a header naming
// someone else is refused.
func TestJWTIdentities(t *testing.T) {
	idp, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forger, _ := rsa.GenerateKey(rand.Reader, 2048)
	budgetsFile := filepath.Join(t.TempDir(), "budgets.yaml")
	os.WriteFile(budgetsFile, []byte("budgets:\n  - {name: payments-month, groups: [payments], window: month, limit_usd: \"10\"}\n"), 0o600)
	up := &fakellm.Server{}
	s := testenv.StartStack(t, testenv.StackOptions{Upstream: up,
		Env:   []string{"IDENTITY_MODE=jwt", "JWT_GROUPS_CLAIM=groups", "BUDGETS_FILE=" + budgetsFile},
		Envoy: envoy.Options{JWT: envoy.JWT{Issuer: "https://idp.test", Audiences: []string{"aifirewall"}, JWKSFile: jwksFile(t, idp, "k1")}}})

	now := time.Now().Unix()
	claims := func(over map[string]any) map[string]any {
		c := map[string]any{"iss": "https://idp.test", "aud": "aifirewall", "sub": "alice@corp.test", "groups": []string{"payments", "eng"},
			"iat": now, "exp": now + 3600}
		for k, v := range over {
			c[k] = v
		}
		return c
	}
	rs := map[string]any{"alg": "RS256", "typ": "JWT", "kid": "k1"}
	good := signJWT(t, idp, rs, claims(nil))

	resp := post(t, s, "/v1/chat/completions", good, cappedBody, nil)
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("a valid token: %d", resp.StatusCode)
	}
	s.WaitSpent(t, billing.BudgetKey("alice@corp.test", billing.Day(time.Now(), time.UTC)), reqCost)
	s.WaitSpent(t, billing.BudgetKey("budget=payments-month", time.Now().UTC().Format("2006-01")), reqCost)
	got := up.Requests()
	if len(got) != 1 || got[0].Headers.Get("Authorization") != "Bearer "+testenv.UpstreamKey {
		t.Fatalf("the provider received %+v", got)
	}
	for k, v := range got[0].Headers {
		if strings.Contains(strings.Join(v, ","), good[:40]) {
			t.Fatalf("the token reached the provider in %s", k)
		}
	}

	for _, c := range []struct {
		name, token, want string
	}{
		{"expired", signJWT(t, idp, rs, claims(map[string]any{"exp": now - 600, "iat": now - 4000})), "expired"},
		{"forged", signJWT(t, forger, rs, claims(nil)), "the bearer token was refused"},
		{"wrong audience", signJWT(t, idp, rs, claims(map[string]any{"aud": "someone-else"})), "udience"},
		{"wrong issuer", signJWT(t, idp, rs, claims(map[string]any{"iss": "https://evil.test"})), "the bearer token was refused"},
		{"alg none", signJWT(t, nil, map[string]any{"alg": "none", "typ": "JWT"}, claims(nil)), "the bearer token was refused"},
		{"not a token", "sk-not-a-jwt", "the bearer token was refused"},
		{"none", "", "no bearer token was sent"},
	} {
		resp := post(t, s, "/v1/chat/completions", c.token, cappedBody, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 401 || !strings.Contains(string(body), c.want) || !strings.Contains(string(body), `"type":"invalid_request_error"`) && !strings.Contains(string(body), `"error"`) {
			t.Errorf("%s: %d %s, want 401 saying %q", c.name, resp.StatusCode, body, c.want)
		}
	}
	if len(up.Requests()) != 1 {
		t.Fatalf("refused tokens reached the provider: %d requests", len(up.Requests()))
	}

	// The identity is the token's: a header naming someone else is refused.
	resp = post(t, s, "/v1/chat/completions", good, cappedBody, map[string]string{"x-user-id": "mallory"})
	if resp.StatusCode != 403 {
		t.Fatalf("x-user-id naming another with a valid token: %d, want 403", resp.StatusCode)
	}
}

// The identity provider's keys fetched from its JWKS URL (https, its
// certificate checked), as Envoy does for a real IdP: here a local TLS
// server, which Envoy asks once at start.
func TestJWTRemoteJWKS(t *testing.T) {
	idp, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := os.ReadFile(jwksFile(t, idp, "k1"))
	var fetched atomic.Int32
	pki := testinfra.NewPKIFor(t, "", "localhost")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched.Add(1)
		w.Header().Set("content-type", "application/json")
		w.Write(jwks)
	}))
	cert, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	jwksURL := "https://localhost:" + srv.URL[strings.LastIndex(srv.URL, ":")+1:] + "/.well-known/jwks.json"
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{"IDENTITY_MODE=jwt"},
		Envoy: envoy.Options{CACertFile: pki.CAFile, JWT: envoy.JWT{Issuer: "https://idp.test", Audiences: []string{"aifirewall"}, JWKSURL: jwksURL}}})
	now := time.Now().Unix()
	token := signJWT(t, idp, map[string]any{"alg": "RS256", "typ": "JWT", "kid": "k1"},
		map[string]any{"iss": "https://idp.test", "aud": "aifirewall", "sub": "dana", "iat": now, "exp": now + 600})
	var status int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp := post(t, s, "/v1/chat/completions", token, cappedBody, nil)
		io.Copy(io.Discard, resp.Body)
		if status = resp.StatusCode; status == 200 || time.Now().After(deadline) {
			break
		}
	}
	if status != 200 || fetched.Load() == 0 {
		t.Fatalf("a token of the remote JWKS's key: %d after %d fetches", status, fetched.Load())
	}
	s.WaitSpent(t, billing.BudgetKey("dana", billing.Day(time.Now(), time.UTC)), reqCost)
}
