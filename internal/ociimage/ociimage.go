// Package ociimage builds the sidecar's container image without a container
// engine: one layer around the static binary, with what the Dockerfile's
// distroless base gives it (a non-root user, CA certificates, writable
// directories owned by that user), written as an OCI image layout in a tar
// archive (podman load, skopeo copy oci-archive:, ctr import). Every file
// carries the same timestamp, so the same inputs give the same digest.
package ociimage

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// UID is the image's user, distroless's "nonroot", which the chart and
// compose run as.
const UID = 65532

// epoch is every file's modification time (reproducible builds).
var epoch = time.Unix(0, 0).UTC()

// Spec is what goes into the image.
type Spec struct {
	Binary   string // the static sidecar binary
	CABundle string // PEM bundle for /etc/ssl/certs/ca-certificates.crt; "" leaves it out
	Ref      string // the image's name:tag, recorded in the layout's index
	Version  string // org.opencontainers.image.version
}

// Build returns the image.
func Build(s Spec) (v1.Image, error) {
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, fmt.Errorf("read binary: %w", err)
	}
	var ca []byte
	if s.CABundle != "" {
		if ca, err = os.ReadFile(s.CABundle); err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
	}
	files := append(Base(), []Entry{
		{Name: "usr", Dir: true, Mode: 0o755},
		{Name: "usr/local", Dir: true, Mode: 0o755},
		{Name: "usr/local/bin", Dir: true, Mode: 0o755},
		{Name: "usr/local/bin/aifirewall", Mode: 0o755, Data: bin},
		// Compose mounts volumes here, seeded with this ownership: the
		// generated envoy.yaml, the ext_proc socket, the settlement spool.
		{Name: "config", Dir: true, Mode: 0o755, UID: UID},
		{Name: "run", Dir: true, Mode: 0o755},
		{Name: "run/aifirewall", Dir: true, Mode: 0o755, UID: UID},
		{Name: "var", Dir: true, Mode: 0o755},
		{Name: "var/lib", Dir: true, Mode: 0o755},
		{Name: "var/lib/aifirewall", Dir: true, Mode: 0o755, UID: UID},
	}...)
	if ca != nil {
		files = append(files, CABundle(ca)...)
	}
	return Assemble(Config{
		Entrypoint: []string{"/usr/local/bin/aifirewall"},
		User:       fmt.Sprintf("%d:%d", UID, UID),
		Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin",
			// No .env in the image: settings come from the environment.
			"ENV_FILE=/nonexistent", "SPOOL_FILE=/var/lib/aifirewall/settlements.jsonl"},
		Ports:  []string{"9090/tcp", "9091/tcp"},
		Labels: map[string]string{"org.opencontainers.image.title": "aifirewall", "org.opencontainers.image.version": s.Version},
	}, files)
}

// Base is what distroless's base gives every image: root and the nonroot
// user, a home for it, and /tmp.
func Base() []Entry {
	return []Entry{
		{Name: "etc", Dir: true, Mode: 0o755},
		{Name: "etc/passwd", Mode: 0o644, Data: []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, UID))},
		{Name: "etc/group", Mode: 0o644, Data: []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", UID))},
		{Name: "home", Dir: true, Mode: 0o755},
		{Name: "home/nonroot", Dir: true, Mode: 0o700, UID: UID},
		{Name: "tmp", Dir: true, Mode: 0o1777},
	}
}

// CABundle is the PEM bundle where Go and OpenSSL look for it.
func CABundle(pem []byte) []Entry {
	return []Entry{
		{Name: "etc/ssl", Dir: true, Mode: 0o755},
		{Name: "etc/ssl/certs", Dir: true, Mode: 0o755},
		{Name: "etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Data: pem},
	}
}

// WriteArchive writes img as an OCI image layout, tagged ref, into the tar
// archive out.
func WriteArchive(img v1.Image, ref, out string) error {
	dir, err := os.MkdirTemp("", "oci-layout")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	// The OCI name is the tag alone; containerd's importer (ctr import)
	// takes the whole name from its own annotation.
	notes := map[string]string{"org.opencontainers.image.ref.name": ref, "io.containerd.image.name": FullName(ref)}
	if err := p.AppendImage(img, layout.WithAnnotations(notes)); err != nil {
		return fmt.Errorf("write OCI layout: %w", err)
	}
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tarDir(dir, f); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(out+".tmp", out)
}

// tarDir writes the files under dir, in a fixed order and timestamp.
func tarDir(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX})
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
