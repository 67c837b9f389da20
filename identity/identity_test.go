package identity

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
)

func TestSharedKey(t *testing.T) {
	a := NewSharedKey("secret")
	cases := []struct {
		r    Request
		ok   bool
		want string
	}{
		{Request{Authorization: []string{"Bearer secret"}}, true, ""},
		{Request{Authorization: []string{"bearer secret"}}, true, ""},
		{Request{APIKey: []string{"secret"}}, true, ""},
		{Request{}, false, "no API key"},
		{Request{Authorization: []string{"Bearer nope"}}, false, "not valid here"},
		{Request{Authorization: []string{"Bearer secret", "Bearer secret"}}, false, "more than one API key"},
		{Request{Authorization: []string{"Bearer secret"}, APIKey: []string{"secret"}}, true, ""},
		{Request{Authorization: []string{"Bearer secret"}, APIKey: []string{"other"}}, false, "more than one API key"},
		{Request{Authorization: []string{"Bearer "}}, false, "no API key"},
		{Request{Authorization: []string{"Basic secret"}}, false, "scheme"},
	}
	for _, c := range cases {
		_, err := a.Authenticate(c.r)
		if (err == nil) != c.ok || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: err = %v", c.r, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error leaks the key: %v", err)
		}
	}
}

func writeKeys(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestKeysFileAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	writeKeys(t, path, "keys:\n  - sha256: "+HashKey("alice-key")+"\n    user: alice\n    daily_limit: \"2.50\"\n")
	k, err := LoadKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := k.Authenticate(Request{Authorization: []string{"Bearer alice-key"}})
	if err != nil || c.User != "alice" || c.Limit != 2_500_000_000 {
		t.Fatalf("alice = %+v, %v", c, err)
	}
	if _, err := k.Authenticate(Request{Authorization: []string{"Bearer bob-key"}}); err == nil {
		t.Fatal("unknown key accepted")
	}

	// The sidecar watches the file through its keyring, which also holds
	// the keys added and revoked at run time.
	store := billing.NewMemStore()
	ring := NewKeyringEmpty(k, store)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		ring.Watch(ctx, 20*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
		close(done)
	}()
	defer func() { cancel(); <-done }()
	accepted := func(key string) bool {
		_, err := ring.Authenticate(Request{Authorization: []string{"Bearer " + key}})
		return err == nil
	}
	writeKeys(t, path, "keys:\n  - sha256: "+HashKey("bob-key")+"\n    user: bob\n")
	waitFor(t, func() bool { return accepted("bob-key") })
	if accepted("alice-key") {
		t.Fatal("removed key still accepted")
	}
	// A broken file keeps the previous keys.
	writeKeys(t, path, "keys: [ {sha256: nothex, user: x} ]")
	time.Sleep(100 * time.Millisecond)
	if !accepted("bob-key") {
		t.Fatal("a broken file dropped the keys in force")
	}
	// So does an empty one: what an editor leaves for a moment mid-write.
	writeKeys(t, path, "")
	time.Sleep(100 * time.Millisecond)
	if !accepted("bob-key") {
		t.Fatal("an empty file dropped the keys in force")
	}
	// Run-time keys, and a revocation that covers a file key.
	store.AddKey(ctx, HashKey("carol-key"), billing.APIKey{User: "carol"})
	store.RevokeKey(ctx, HashKey("bob-key"))
	waitFor(t, func() bool { return accepted("carol-key") && !accepted("bob-key") })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5s")
}

func TestKeysFileRejects(t *testing.T) {
	for name, body := range map[string]string{
		"plain key":    "keys:\n  - sha256: my-secret-key\n    user: a\n",
		"no user":      "keys:\n  - sha256: " + HashKey("k") + "\n",
		"bad limit":    "keys:\n  - sha256: " + HashKey("k") + "\n    user: a\n    daily_limit: lots\n",
		"duplicate":    "keys:\n  - {sha256: " + HashKey("k") + ", user: a}\n  - {sha256: " + HashKey("k") + ", user: b}\n",
		"typo'd field": "keys:\n  - sha265: " + HashKey("k") + "\n    user: a\n",
	} {
		path := filepath.Join(t.TempDir(), "keys.yaml")
		writeKeys(t, path, body)
		if _, err := LoadKeys(path); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "my-secret-key") {
			t.Errorf("%s: error echoes the file's content: %v", name, err)
		}
	}
}

func TestMesh(t *testing.T) {
	m := Mesh{TrustXFCC: true}
	c, err := m.Authenticate(Request{PeerURISAN: "spiffe://corp/ns/billing/sa/reporter"})
	if err != nil || c.User != "spiffe://corp/ns/billing/sa/reporter" {
		t.Fatalf("attribute: %+v %v", c, err)
	}
	xfcc := `By=spiffe://corp/egress;Hash=abc;URI=spiffe://corp/a,By=spiffe://corp/egress;Hash=def;Subject="CN=x,O=y";URI=spiffe://corp/ns/web/sa/frontend`
	if c, err = m.Authenticate(Request{XFCC: []string{xfcc}}); err != nil || c.User != "spiffe://corp/ns/web/sa/frontend" {
		t.Fatalf("xfcc: %+v %v", c, err)
	}
	if _, err := (Mesh{}).Authenticate(Request{XFCC: []string{xfcc}}); err == nil {
		t.Fatal("untrusted XFCC accepted")
	}
	if _, err := m.Authenticate(Request{PeerURISAN: "https://not-spiffe"}); err == nil {
		t.Fatal("non-SPIFFE SAN accepted")
	}
}

// The default mode takes the shared key and per-user keys side by side.
func TestSharedAndKeys(t *testing.T) {
	store := billing.NewMemStore()
	ctx := context.Background()
	store.AddKey(ctx, HashKey("mona-key"), billing.APIKey{User: "mona", Limit: 10_000_000})
	store.AddKey(ctx, HashKey("gone-key"), billing.APIKey{User: "gone"})
	store.RevokeKey(ctx, HashKey("gone-key"))
	ring, err := NewKeyring(ctx, nil, store)
	if err != nil {
		t.Fatal(err)
	}
	auth := SharedAndKeys{Shared: NewSharedKey("shared-key"), Keys: ring}
	bearer := func(k string) Request { return Request{Authorization: []string{"Bearer " + k}} }
	if c, err := auth.Authenticate(bearer("shared-key")); err != nil || c.User != "" {
		t.Fatalf("shared key = %+v, %v; want a caller who names the user", c, err)
	}
	if c, err := auth.Authenticate(Request{APIKey: []string{"mona-key"}}); err != nil || c.User != "mona" || c.Limit != 10_000_000 {
		t.Fatalf("per-user key = %+v, %v", c, err)
	}
	for name, r := range map[string]Request{
		"unknown": bearer("nope"), "revoked": bearer("gone-key"),
		"two keys": {Authorization: []string{"Bearer shared-key"}, APIKey: []string{"mona-key"}},
	} {
		if _, err := auth.Authenticate(r); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

// No 401 text carries what agent clients redact as a secret.
func TestErrorTextsHaveNoSecretShapes(t *testing.T) {
	shapes := regexp.MustCompile(`(?i)\bbearer\s+\S|\bsk-[a-z0-9]|x-api-key\s*[:=]|authorization\s*[:=]`)
	_, meshErr := Mesh{}.Authenticate(Request{})
	for _, err := range []error{errNoKey, errBadKey, errMany, errScheme, errRevoked, meshErr} {
		if m := shapes.FindString(err.Error()); m != "" {
			t.Errorf("%q contains %q", err, m)
		}
	}
}
