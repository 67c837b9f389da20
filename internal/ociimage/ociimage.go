// Package ociimage builds the sidecar's container image without a container
// engine: one layer around the static binary, with what the Dockerfile's
// distroless base gives it (a non-root user, CA certificates, writable
// directories owned by that user), written as an OCI image layout in a tar
// archive (podman load, skopeo copy oci-archive:, ctr import). Every file
// carries the same timestamp, so the same inputs give the same digest.
package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
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
	layer, err := rootfs(bin, ca)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS, cfg.Created = "amd64", "linux", v1.Time{Time: epoch}
	cfg.Config.Entrypoint = []string{"/usr/local/bin/aifirewall"}
	cfg.Config.User = fmt.Sprintf("%d:%d", UID, UID)
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin",
		// No .env in the image: settings come from the environment.
		"ENV_FILE=/nonexistent", "SPOOL_FILE=/var/lib/aifirewall/settlements.jsonl"}
	cfg.Config.ExposedPorts = map[string]struct{}{"9090/tcp": {}, "9091/tcp": {}}
	cfg.Config.Labels = map[string]string{"org.opencontainers.image.title": "aifirewall",
		"org.opencontainers.image.version": s.Version}
	return mutate.ConfigFile(img, cfg)
}

// rootfs is the image's one layer.
func rootfs(bin, ca []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, uid int, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	steps := []func() error{
		func() error { return dir("etc", 0, 0o755) },
		func() error {
			return file("etc/passwd", 0o644, []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, UID)))
		},
		func() error { return file("etc/group", 0o644, []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", UID))) },
		func() error { return dir("home", 0, 0o755) },
		func() error { return dir("home/nonroot", UID, 0o700) },
		func() error { return dir("tmp", 0, 0o1777) },
		func() error { return dir("usr", 0, 0o755) },
		func() error { return dir("usr/local", 0, 0o755) },
		func() error { return dir("usr/local/bin", 0, 0o755) },
		func() error { return file("usr/local/bin/aifirewall", 0o755, bin) },
		// Compose mounts volumes here, seeded with this ownership: the
		// generated envoy.yaml, the ext_proc socket, the settlement spool.
		func() error { return dir("config", UID, 0o755) },
		func() error { return dir("run", 0, 0o755) },
		func() error { return dir("run/aifirewall", UID, 0o755) },
		func() error { return dir("var", 0, 0o755) },
		func() error { return dir("var/lib", 0, 0o755) },
		func() error { return dir("var/lib/aifirewall", UID, 0o755) },
	}
	if ca != nil {
		steps = append(steps,
			func() error { return dir("etc/ssl", 0, 0o755) },
			func() error { return dir("etc/ssl/certs", 0, 0o755) },
			func() error { return file("etc/ssl/certs/ca-certificates.crt", 0o644, ca) })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("image layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(types.OCILayer))
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
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
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
