package providers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCredentialFromEnvAndFile(t *testing.T) {
	t.Setenv("TEST_PROVIDER_KEY", " sk-env-secret\n")
	c, err := (&Provider{Name: "a", APIKeyEnv: "TEST_PROVIDER_KEY"}).Credential()
	if err != nil || c.Key() != "sk-env-secret" {
		t.Fatalf("env key %q, %v", c.Key(), err)
	}
	if _, err := (&Provider{Name: "a", APIKeyEnv: "TEST_PROVIDER_KEY_UNSET"}).Credential(); err == nil ||
		!strings.Contains(err.Error(), "TEST_PROVIDER_KEY_UNSET is not set") {
		t.Fatalf("unset variable: %v", err)
	}

	file := filepath.Join(t.TempDir(), "key")
	os.WriteFile(file, []byte("sk-file-one\n"), 0o600)
	c, err = (&Provider{Name: "b", APIKeyFile: file}).Credential()
	if err != nil || c.Key() != "sk-file-one" {
		t.Fatalf("file key %q, %v", c.Key(), err)
	}
	// A rotated Secret is picked up; a broken one keeps the key in force.
	os.WriteFile(file, []byte("sk-file-two"), 0o600)
	if changed, err := c.Reload(); !changed || err != nil || c.Key() != "sk-file-two" {
		t.Fatalf("reload: %v %v %q", changed, err, c.Key())
	}
	os.WriteFile(file, []byte("sk-a\nsk-b\n"), 0o600)
	if _, err := c.Reload(); err == nil || strings.Contains(err.Error(), "sk-") || c.Key() != "sk-file-two" {
		t.Fatalf("two lines: %v, key %q", err, c.Key())
	}
	os.Remove(file)
	if _, err := c.Reload(); err == nil || c.Key() != "sk-file-two" {
		t.Fatalf("missing file: %v, key %q", err, c.Key())
	}
}
