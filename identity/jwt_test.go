package identity

import (
	"slices"
	"strings"
	"testing"
)

func TestJWTClaims(t *testing.T) {
	sa := map[string]any{"sub": "system:serviceaccount:apps:chatbot",
		"kubernetes.io": map[string]any{"namespace": "apps", "serviceaccount": map[string]any{"name": "chatbot"}}}
	c, err := JWT{UserClaim: "sub", GroupsClaim: "kubernetes.io.namespace"}.Authenticate(Request{JWTPayload: sa})
	if err != nil || c.User != "system:serviceaccount:apps:chatbot" || !slices.Equal(c.Groups, []string{"apps"}) {
		t.Fatalf("service-account token: %+v %v", c, err)
	}
	idp := map[string]any{"sub": "u1", "email": "alice@corp.test", "groups": []any{"payments", 7, "", "eng"}}
	c, err = JWT{UserClaim: "email", GroupsClaim: "groups"}.Authenticate(Request{JWTPayload: idp})
	if err != nil || c.User != "alice@corp.test" || !slices.Equal(c.Groups, []string{"payments", "eng"}) {
		t.Fatalf("IdP token: %+v %v", c, err)
	}
	if _, err := (JWT{UserClaim: "email"}).Authenticate(Request{JWTPayload: map[string]any{"sub": "x"}}); err == nil {
		t.Fatal("a token without the user claim was taken")
	}
	for _, sub := range []any{42, "a}b", "budget=team", "x\ny"} {
		if _, err := (JWT{UserClaim: "sub"}).Authenticate(Request{JWTPayload: map[string]any{"sub": sub}}); err == nil {
			t.Fatalf("user claim %q was taken", sub)
		}
	}
	// Headers never name the caller in this mode.
	_, err = JWT{UserClaim: "sub"}.Authenticate(Request{Authorization: []string{"Bearer eyJ.forged.token"}, XFCC: []string{"URI=spiffe://x"}})
	if err == nil || !strings.Contains(err.Error(), "no bearer token") {
		t.Fatalf("headers alone: %v", err)
	}
	_, err = JWT{UserClaim: "sub"}.Authenticate(Request{JWTFailure: "Jwt is expired"})
	if err == nil || !strings.Contains(err.Error(), "Jwt is expired") {
		t.Fatalf("a refused token: %v", err)
	}
}

func TestMeshGroups(t *testing.T) {
	groups, err := ParseMeshGroups([]string{"spiffe://cluster.local/ns/*/sa/*={namespace}", "spiffe://cluster.local/ns/ci/sa/*=ci-runners"})
	if err != nil {
		t.Fatal(err)
	}
	m := Mesh{Groups: groups}
	c, err := m.Authenticate(Request{PeerURISAN: "spiffe://cluster.local/ns/ci/sa/runner"})
	if err != nil || !slices.Equal(c.Groups, []string{"ci", "ci-runners"}) {
		t.Fatalf("%+v %v", c, err)
	}
	c, _ = m.Authenticate(Request{PeerURISAN: "spiffe://other.domain/workload/x"})
	if len(c.Groups) != 0 {
		t.Fatalf("an ID of no pattern got groups %v", c.Groups)
	}
	c, _ = m.Authenticate(Request{PeerURISAN: "spiffe://cluster.local/ns/apps/sa/web/extra"})
	if slices.Contains(c.Groups, "apps") {
		t.Fatalf("a non-Kubernetes-form ID got a namespace group: %v", c.Groups)
	}
	for _, bad := range []string{"payments", "spiffe://x/*", "spiffe://x/*="} {
		if _, err := ParseMeshGroups([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
