package ociimage

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The archive is an OCI layout whose one image runs the binary as the
// non-root user, owns the writable directories to that user, carries the
// CA bundle, and is byte for byte the same when built twice.
func TestArchive(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "aifirewall")
	os.WriteFile(bin, []byte("\x7fELF not really"), 0o755)
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644)
	var archives [2][]byte
	for i := range archives {
		img, err := Build(Spec{Binary: bin, CABundle: ca, Ref: "aifirewall:9.9.9", Version: "9.9.9"})
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "img.tar")
		if err := WriteArchive(img, "aifirewall:9.9.9", out); err != nil {
			t.Fatal(err)
		}
		archives[i], _ = os.ReadFile(out)
	}
	if !bytes.Equal(archives[0], archives[1]) {
		t.Fatal("two builds of the same inputs differ")
	}

	img, ref, err := Open(archives[0], filepath.Join(dir, "layout"))
	if err != nil || ref != "aifirewall:9.9.9" {
		t.Fatalf("read back: %q %v", ref, err)
	}
	cfg, _ := img.ConfigFile()
	c := cfg.Config
	if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/aifirewall"}) ||
		!slices.Contains(c.Env, "ENV_FILE=/nonexistent") || cfg.OS != "linux" || c.Labels["org.opencontainers.image.version"] != "9.9.9" {
		t.Errorf("config: %+v", cfg)
	}
	files := map[string]*tar.Header{}
	var binary []byte
	err = Walk(img, func(h *tar.Header, r io.Reader) error {
		files[h.Name] = h
		if h.Name == "usr/local/bin/aifirewall" {
			binary, _ = io.ReadAll(r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if h := files["usr/local/bin/aifirewall"]; h == nil || h.Mode != 0o755 || string(binary) != "\x7fELF not really" {
		t.Errorf("the binary: %+v", h)
	}
	for _, d := range []string{"config/", "run/aifirewall/", "var/lib/aifirewall/"} {
		if h := files[d]; h == nil || h.Uid != UID || h.Gid != UID {
			t.Errorf("%s: %+v, want owned by %d", d, h, UID)
		}
	}
	for _, f := range []string{"etc/passwd", "etc/group", "etc/ssl/certs/ca-certificates.crt", "tmp/"} {
		if files[f] == nil {
			t.Errorf("no %s in the image", f)
		}
	}
}

// containerd names an image the way the kubelet asks for it: a reference
// without a registry is Docker Hub's.
func TestFullName(t *testing.T) {
	for ref, want := range map[string]string{
		"aifirewall:1":                    "docker.io/library/aifirewall:1",
		"envoyproxy/envoy:v1.40.0":        "docker.io/envoyproxy/envoy:v1.40.0",
		"aifirewall.test/envoy:v1.40.0":   "aifirewall.test/envoy:v1.40.0",
		"localhost/x:1":                   "localhost/x:1",
		"registry:5000/team/aifirewall:1": "registry:5000/team/aifirewall:1",
	} {
		if got := FullName(ref); got != want {
			t.Errorf("FullName(%q) = %q, want %q", ref, got, want)
		}
	}
}
