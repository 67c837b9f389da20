//go:build deploy

package deploytest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// manifests reads a multi-document YAML file of the repository.
func manifests(t *testing.T, rel string) []doc {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testinfra.RepoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	var docs []doc
	for _, part := range strings.Split(string(raw), "\n---\n") {
		var d doc
		if err := yaml.Unmarshal([]byte(part), &d); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

// The EnvoyFilter runs the ext_proc filter exactly as the generated Envoy
// configuration does (one generator: this is checked against it), bar the
// cluster that names the firewall's Service in the mesh.
func TestIstioExtProcMatchesTheGenerator(t *testing.T) {
	ef := find(t, manifests(t, "deploy/istio/llm-egress.yaml"), "EnvoyFilter")
	typed := get(ef, "spec", "configPatches", 0, "patch", "value", "typed_config").(map[string]any)
	if typed["@type"] != "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor" {
		t.Fatalf("@type %v", typed["@type"])
	}
	delete(typed, "@type")
	js, _ := json.Marshal(typed)
	var got extprocv3.ExternalProcessor
	if err := protojson.Unmarshal(js, &got); err != nil {
		t.Fatalf("EnvoyFilter typed_config: %v", err)
	}
	want := envoy.ExtProcFilter(envoy.Options{})
	want.GrpcService = &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
		EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "outbound|50051||aifirewall.aifirewall.svc.cluster.local"}}}
	if !proto.Equal(&got, want) {
		w, _ := protojson.Marshal(want)
		t.Fatalf("the EnvoyFilter's ext_proc differs from the generator's:\n got %s\nwant %s", js, w)
	}
}
