package providers

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
)

// Credential is a provider's upstream key. One read from a file (a mounted
// Kubernetes Secret) is re-read by Reload, so a rotated Secret takes effect
// without a restart. Errors name where the key lives, never the key.
type Credential struct {
	env, file string

	mu  sync.RWMutex
	key string
	raw []byte
}

// Credential reads the provider's key now.
func (p *Provider) Credential() (*Credential, error) {
	c := &Credential{env: p.APIKeyEnv, file: p.APIKeyFile}
	if c.env != "" {
		c.key = strings.TrimSpace(os.Getenv(c.env))
		if c.key == "" {
			return nil, fmt.Errorf("provider %s: api_key_env: environment variable %s is not set or empty", p.Name, c.env)
		}
		return c, nil
	}
	if _, err := c.Reload(); err != nil {
		return nil, fmt.Errorf("provider %s: %w", p.Name, err)
	}
	return c, nil
}

// Key is the current key.
func (c *Credential) Key() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.key
}

// Reload re-reads a key file and reports whether the key changed; a file
// that cannot be read or is empty keeps the previous key.
func (c *Credential) Reload() (bool, error) {
	if c.file == "" {
		return false, nil
	}
	raw, err := os.ReadFile(c.file)
	if err != nil {
		return false, fmt.Errorf("api_key_file: %w", err)
	}
	c.mu.RLock()
	// A key was read before (raw is nil until then): an unchanged file
	// needs no new check. An empty first read must not pass as unchanged.
	same := c.raw != nil && bytes.Equal(raw, c.raw)
	c.mu.RUnlock()
	if same {
		return false, nil
	}
	key, err := parseKey(c.file, raw)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	c.key, c.raw = key, raw
	c.mu.Unlock()
	return true, nil
}

// ReadKeyFile reads a provider key file: one key on one line.
func ReadKeyFile(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("api_key_file: %w", err)
	}
	return parseKey(path, raw)
}

func parseKey(path string, raw []byte) (string, error) {
	key := strings.TrimSpace(string(raw))
	if key == "" || strings.ContainsAny(key, "\r\n") {
		return "", fmt.Errorf("api_key_file %s: want one key on one line (the file is empty or holds several lines)", path)
	}
	return key, nil
}
