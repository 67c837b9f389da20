//go:build deploy

package deploytest

import (
	"archive/tar"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/internal/ociimage"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// `make image` writes an OCI archive, tagged with the chart's appVersion (the
// chart's default image tag), whose entrypoint is the real static sidecar:
// taken out of the image's layer and run, it answers as the sidecar does.
func TestMakeImage(t *testing.T) {
	root := testinfra.RepoRoot(t)
	cmd := exec.Command("make", "-s", "image")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	version := chartAppVersion(t)
	archive, err := os.ReadFile(filepath.Join(root, "bin/aifirewall-image.tar"))
	if err != nil {
		t.Fatal(err)
	}
	img, ref, err := ociimage.Open(archive, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if ref != "aifirewall:"+version {
		t.Fatalf("the image is tagged %q, the chart's default is aifirewall:%s", ref, version)
	}
	bin := filepath.Join(t.TempDir(), "aifirewall")
	err = ociimage.Walk(img, func(h *tar.Header, r io.Reader) error {
		if h.Name != "usr/local/bin/aifirewall" {
			return nil
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		return os.WriteFile(bin, b, 0o755)
	})
	if err != nil {
		t.Fatal(err)
	}
	run := exec.Command(bin, "hash-key")
	run.Stdin = strings.NewReader("a-gateway-key\n")
	got, err := run.Output()
	if err != nil || strings.TrimSpace(string(got)) != identity.HashKey("a-gateway-key") {
		t.Fatalf("the image's binary: %q %v", got, err)
	}
}

// chartAppVersion is the chart's appVersion, its default image tag.
func chartAppVersion(t *testing.T) string {
	t.Helper()
	chart, err := os.ReadFile(filepath.Join(chartDir(t), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(chart), "\n") {
		if v, ok := strings.CutPrefix(line, "appVersion:"); ok {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	t.Fatal("Chart.yaml has no appVersion")
	return ""
}
