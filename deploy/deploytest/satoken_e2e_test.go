//go:build deploy

package deploytest

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

// Kubernetes service-account tokens are JWTs of the cluster's issuer: a
// workload presenting its projected token (audience: this gateway) is
// identified as system:serviceaccount:<ns>:<name>, and its namespace is a
// group its budgets can name. Against the real kube-apiserver: its issuer
// from its discovery document, its keys from its JWKS, its tokens from
// TokenRequest; a token for another audience (the API server's own) is
// refused.
func TestServiceAccountTokenIdentities(t *testing.T) {
	s := startAPIServer(t)
	s.create(t, doc{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "apps"}})
	s.create(t, doc{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "chatbot", "namespace": "apps"}})
	st, disc := s.do(t, "GET", "/.well-known/openid-configuration", nil)
	var oidc struct {
		Issuer string `json:"issuer"`
	}
	if json.Unmarshal([]byte(disc), &oidc); st != 200 || oidc.Issuer == "" {
		t.Fatalf("discovery: %d %s", st, disc)
	}
	st, jwks := s.do(t, "GET", "/openid/v1/jwks", nil)
	if st != 200 {
		t.Fatalf("jwks: %d %s", st, jwks)
	}
	dir := t.TempDir()
	jwksFile, budgetsFile := filepath.Join(dir, "jwks.json"), filepath.Join(dir, "budgets.yaml")
	os.WriteFile(jwksFile, []byte(jwks), 0o600)
	os.WriteFile(budgetsFile, []byte("budgets:\n  - {name: apps-month, groups: [apps], window: month, limit_usd: \"10\"}\n"), 0o600)
	stack := testenv.StartStack(t, testenv.StackOptions{
		Env:   []string{"IDENTITY_MODE=jwt", "JWT_GROUPS_CLAIM=kubernetes.io.namespace", "BUDGETS_FILE=" + budgetsFile},
		Envoy: envoy.Options{JWT: envoy.JWT{Issuer: oidc.Issuer, Audiences: []string{"aifirewall"}, JWKSFile: jwksFile}}})

	call := func(token string) (int, string) {
		req, _ := http.NewRequest("POST", stack.Envoy.URL()+"/v1/chat/completions", strings.NewReader(chatBody))
		req.Header.Set("authorization", "Bearer "+token)
		req.Header.Set("content-type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := call(s.saToken(t, "apps", "chatbot", "aifirewall")); st != 200 {
		t.Fatalf("the workload's token: %d %s", st, body)
	} else {
		u := usageIn(t, body)
		cost := u.cost(150, 600) // gpt-4o-mini
		stack.WaitSpent(t, billing.BudgetKey("system:serviceaccount:apps:chatbot", billing.Day(time.Now(), time.UTC)), cost)
		stack.WaitSpent(t, billing.BudgetKey("budget=apps-month", time.Now().UTC().Format("2006-01")), cost)
	}
	if st, body := call(s.saToken(t, "apps", "chatbot", oidc.Issuer)); st != 401 || !strings.Contains(body, "udience") {
		t.Fatalf("a token for the API server's audience: %d %s", st, body)
	}
}
