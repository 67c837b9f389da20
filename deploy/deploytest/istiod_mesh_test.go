//go:build deploy

package deploytest

// What TestIstiodProgramsTheEgressGateway runs istiod with: the objects a
// cluster would hold for the egress gateway and the firewall, the
// gateway's node agent, and a workload's certificate from istiod's CA.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

const (
	gatewaySA  = "istio-llm-egressgateway-service-account"
	gatewayID  = "spiffe://cluster.local/ns/istio-system/sa/" + gatewaySA
	gatewayPod = "istio-llm-egressgateway-0"
	istiodHost = "istiod.istio-system.svc"
)

type mesh struct {
	s  *apiServer
	ns *testinfra.Netns
}

// newMesh makes the namespaces, service accounts, Services, EndpointSlices
// and the gateway's Pod (Running, Ready, at the namespace's address): no
// controller runs here to make them from Deployments.
// Workloads are service accounts ("namespace/name").
func newMesh(t *testing.T, s *apiServer, ns *testinfra.Netns, workloads ...string) *mesh {
	t.Helper()
	resources["discovery.k8s.io/v1/EndpointSlice"] = "endpointslices"
	sa := func(ns, name string) {
		s.create(t, doc{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
		s.create(t, doc{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": name, "namespace": ns}})
	}
	sa("istio-system", gatewaySA)
	sa("aifirewall", "aifirewall")
	for _, w := range workloads {
		n, name, _ := strings.Cut(w, "/")
		sa(n, name)
	}

	labels := map[string]any{"istio": "llm-egressgateway", "app": "istio-llm-egressgateway"}
	service := func(ns, name string, selector map[string]any, port map[string]any, ip string) {
		s.create(t, doc{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": name, "namespace": ns},
			"spec": map[string]any{"selector": selector, "ports": []any{port}}})
		s.create(t, doc{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
			"metadata":    map[string]any{"name": name + "-1", "namespace": ns, "labels": map[string]any{"kubernetes.io/service-name": name}},
			"addressType": "IPv4",
			"endpoints":   []any{map[string]any{"addresses": []string{ip}, "conditions": map[string]any{"ready": true}}},
			"ports":       []any{map[string]any{"name": port["name"], "port": port["targetPort"], "protocol": "TCP", "appProtocol": port["appProtocol"]}}})
	}
	service("istio-system", "istio-llm-egressgateway", labels,
		map[string]any{"name": "http", "port": 80, "targetPort": 80}, ns.IP)
	// The firewall (the chart's extproc mode) on the host's end of the pair.
	service("aifirewall", "aifirewall", map[string]any{"app.kubernetes.io/name": "aifirewall"},
		map[string]any{"name": "grpc", "port": 50051, "targetPort": 50051, "appProtocol": "grpc"}, ns.HostIP)

	s.create(t, doc{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": gatewayPod, "namespace": "istio-system", "labels": labels},
		"spec": map[string]any{"serviceAccountName": gatewaySA, "containers": []any{map[string]any{"name": "istio-proxy", "image": "istio-proxy"}}}})
	path := "/api/v1/namespaces/istio-system/pods/" + gatewayPod
	_, body := s.do(t, "GET", path, nil)
	var pod map[string]any
	if err := json.Unmarshal([]byte(body), &pod); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	pod["status"] = map[string]any{"phase": "Running", "podIP": ns.IP, "podIPs": []any{map[string]any{"ip": ns.IP}}, "hostIP": ns.IP,
		"conditions": []any{map[string]any{"type": "Ready", "status": "True", "lastTransitionTime": now}}}
	b, _ := json.Marshal(pod)
	if st, body := s.do(t, "PUT", path+"/status", b); st != 200 {
		t.Fatalf("pod status: %d %s", st, body)
	}
	return &mesh{s: s, ns: ns}
}

// startGateway runs Istio's node agent for the gateway's Pod in the
// namespace, laid out as the istio-proxy container is (the bootstrap
// template the image ships, the token and root certificate volumes, the
// pod's labels), with the Envoy at hand. It returns the agent's output.
func (m *mesh) startGateway(t *testing.T, agent, envoyBin, istio, rootPEM string) *testinfra.LogBuffer {
	t.Helper()
	dir := t.TempDir()
	tmpl, err := os.ReadFile(filepath.Join(istio, "tools/packaging/common/envoy_bootstrap.json"))
	if err != nil {
		t.Fatal(err)
	}
	for rel, content := range map[string]string{
		"var/lib/istio/envoy/envoy_bootstrap_tmpl.json": string(tmpl),
		"var/run/secrets/tokens/istio-token":            m.s.saToken(t, "istio-system", gatewaySA, "istio-ca"),
		"var/run/secrets/istio/root-cert.pem":           rootPEM,
		"etc/istio/pod/labels":                          "app=\"istio-llm-egressgateway\"\nistio=\"llm-egressgateway\"\n",
	} {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(dir, "etc/istio/proxy"), 0o755)
	proxyConfig, _ := json.Marshal(map[string]any{"discoveryAddress": istiodHost + ":15012", "binaryPath": envoyBin,
		"configPath": "./etc/istio/proxy"})
	ctx, cancel := context.WithCancel(context.Background())
	cmd := m.ns.Command(ctx, agent, "proxy", "router", "--domain", "istio-system.svc.cluster.local", "--proxyLogLevel", "warning")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "POD_NAME="+gatewayPod, "POD_NAMESPACE=istio-system", "INSTANCE_IP="+m.ns.IP,
		"HOST_IP="+m.ns.IP, "SERVICE_ACCOUNT="+gatewaySA, "ISTIO_META_CLUSTER_ID=Kubernetes", "ISTIO_META_MESH_ID=cluster.local",
		"ISTIO_META_WORKLOAD_NAME=istio-llm-egressgateway", "TRUST_DOMAIN=cluster.local", "PILOT_CERT_PROVIDER=istiod",
		"CA_ADDR="+istiodHost+":15012", "JWT_POLICY=third-party-jwt", "PROXY_CONFIG="+string(proxyConfig))
	return start(t, "pilot-agent and Envoy", cmd, cancel)
}

// workloadCert asks istiod's CA (its gRPC IstioCertificateService, as a
// workload's node agent does) for a certificate of service account ns/sa,
// authenticated by that account's token.
func (m *mesh) workloadCert(t *testing.T, ns, sa string, root *x509.CertPool) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := url.Parse(fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", ns, sa))
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	// IstioCertificateRequest{csr: 1, validity_duration: 3}
	req := protowire.AppendTag(nil, 1, protowire.BytesType)
	req = protowire.AppendString(req, string(csr))
	req = protowire.AppendTag(req, 3, protowire.VarintType)
	req = protowire.AppendVarint(req, 3600)

	conn, err := grpc.NewClient(m.ns.HostIP+":15012", grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{RootCAs: root, ServerName: istiodHost})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+m.s.saToken(t, ns, sa, "istio-ca"), "ClusterID", "Kubernetes")
	var resp []byte
	if err := conn.Invoke(ctx, "/istio.v1.auth.IstioCertificateService/CreateCertificate", &req, &resp, grpc.ForceCodec(rawCodec{})); err != nil {
		t.Fatalf("istiod's CA: %v", err)
	}
	// IstioCertificateResponse{repeated cert_chain: 1}
	var chain []byte
	for len(resp) > 0 {
		num, typ, n := protowire.ConsumeTag(resp)
		if n < 0 {
			t.Fatal("istiod's CA: a malformed answer")
		}
		resp = resp[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(resp)
			chain = append(chain, v...)
			resp = resp[n:]
			continue
		}
		resp = resp[protowire.ConsumeFieldValue(num, typ, resp):]
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cert, err := tls.X509KeyPair(chain, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatalf("istiod's CA answered %q: %v", chain, err)
	}
	return &cert
}

// verifySPIFFE checks a peer's chain against root and its URI SAN against
// id, as Istio's proxies check each other.
func verifySPIFFE(root *x509.CertPool, id string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		var certs []*x509.Certificate
		for _, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			certs = append(certs, c)
		}
		if len(certs) == 0 {
			return errors.New("no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: root, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return err
		}
		if !slices.ContainsFunc(certs[0].URIs, func(u *url.URL) bool { return u.String() == id }) {
			return fmt.Errorf("peer is %v, want %s", certs[0].URIs, id)
		}
		return nil
	}
}

// rawCodec sends and receives messages already encoded (the test has no
// generated code for Istio's CA API).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }

func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }
