package envoy_test

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

const adminToken = "operator-token-0123456789"

// admin runs the CLI of the sidecar binary against the operator API.
func admin(t *testing.T, addr, token string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(testenv.SidecarBinary(t), append([]string{"admin", "-addr", addr}, args...)...)
	cmd.Env = append(os.Environ(), "ADMIN_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The operator's whole loop through the CLI: create a key, watch its
// usage, raise a limit, revoke the key.
func TestOperatorAPIAndCLI(t *testing.T) {
	opAddr := fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t))
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{
		"IDENTITY_MODE=keys", "ADMIN_TOKEN=" + adminToken, "OPERATOR_ADDR=" + opAddr, "STREAM_CUTOFF=false"}})
	testinfra.WaitTCP(t, opAddr, 10*time.Second)

	if out, err := admin(t, opAddr, "wrong-token-wrong-token", "users"); err == nil || !strings.Contains(out, "admin token") {
		t.Fatalf("wrong token: %v %s", err, out)
	}
	out, err := admin(t, opAddr, adminToken, "add-key", "alice", "0.000005")
	if err != nil {
		t.Fatalf("add-key: %v %s", err, out)
	}
	key := regexp.MustCompile(`key:\s+(\S+)`).FindStringSubmatch(out)
	sha := regexp.MustCompile(`sha256:\s+([0-9a-f]{64})`).FindStringSubmatch(out)
	if key == nil || sha == nil {
		t.Fatalf("add-key printed %q", out)
	}
	// Added keys reach the sidecar at its next refresh (2s).
	waitStatus(t, s, key[1], 200)
	s.WaitSpent(t, today("alice"), reqCost)

	out, err = admin(t, opAddr, adminToken, "usage", "alice")
	if err != nil || !strings.Contains(out, "0.00000885") {
		t.Fatalf("usage: %v\n%s", err, out)
	}
	out, err = admin(t, opAddr, adminToken, "users")
	if err != nil || !strings.Contains(out, "alice") {
		t.Fatalf("users: %v\n%s", err, out)
	}
	// Over the key's own limit, then the operator raises it.
	if r := post(t, s, "/v1/chat/completions", key[1], seedBody, nil); r.StatusCode != 402 {
		t.Fatalf("over the key's limit: %d", r.StatusCode)
	}
	if out, err = admin(t, opAddr, adminToken, "set-limit", "alice", "1"); err != nil || !strings.Contains(out, "(override)") {
		t.Fatalf("set-limit: %v\n%s", err, out)
	}
	if r := post(t, s, "/v1/chat/completions", key[1], seedBody, nil); r.StatusCode != 200 {
		t.Fatalf("after raising the limit: %d", r.StatusCode)
	}
	if _, err = admin(t, opAddr, adminToken, "revoke-key", sha[1]); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, key[1], 401)
	if strings.Contains(s.Sidecar.Log(), key[1]) {
		t.Fatal("the key appears in the sidecar's log")
	}
}
