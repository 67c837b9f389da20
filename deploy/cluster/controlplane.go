package cluster

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// Every component authenticates with a static token (the API server's
// token file); the identities are the ones its default RBAC and the Node
// authorizer expect of each.
var identities = []struct{ name, user, groups string }{
	{"admin", "admin", "system:masters"},
	{"kubelet", "system:node:" + nodeName, "system:nodes"},
	{"controller-manager", "system:kube-controller-manager", ""},
	{"scheduler", "system:kube-scheduler", ""},
	{"kube-proxy", "system:kube-proxy", ""},
}

// startControlPlane runs etcd, the API server, the controller manager and
// the scheduler on loopback, and CoreDNS on the node's address.
func (c *Cluster) startControlPlane(t *testing.T) {
	t.Helper()
	pki := testinfra.NewPKIFor(t, "", "localhost")
	c.CAFile = pki.CAFile
	c.client = &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.CAPool}}}
	var tokens strings.Builder
	for i, id := range identities {
		tok := fmt.Sprintf("aifw-test-%s-%d-%d", id.name, os.Getpid(), i)
		fmt.Fprintf(&tokens, "%s,%s,%d", tok, id.user, 1000+i)
		if id.groups != "" {
			fmt.Fprintf(&tokens, ",%q", id.groups)
		}
		tokens.WriteString("\n")
		c.tokens[id.name] = tok
	}
	tokenFile := c.file(t, "tokens.csv", tokens.String())

	etcdPort, peer := testinfra.FreePort(t), testinfra.FreePort(t)
	etcdURL, peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort), fmt.Sprintf("http://127.0.0.1:%d", peer)
	c.start(t, "etcd", c.tool(t, "etcd"), "--data-dir", filepath.Join(c.dir, "etcd"), "--name", "aifw",
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL, "--initial-cluster", "aifw="+peerURL,
		"--listen-metrics-urls", fmt.Sprintf("http://127.0.0.1:%d", testinfra.FreePort(t)))
	testinfra.WaitTCP(t, fmt.Sprintf("127.0.0.1:%d", etcdPort), 30*time.Second)

	saKey, saPub := WriteServiceAccountKeys(t, c.dir)
	apiPort := testinfra.FreePort(t)
	c.APIServer = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	c.start(t, "kube-apiserver", c.tool(t, "kube-apiserver"), "--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", fmt.Sprint(apiPort),
		"--tls-cert-file", pki.CertFile, "--tls-private-key-file", pki.KeyFile,
		"--token-auth-file", tokenFile, "--authorization-mode", "Node,RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", ServiceCIDR,
		// Pods never call the API here (the chart mounts no token), so the
		// kubernetes Service needs no reachable endpoint.
		"--endpoint-reconciler-type", "none")
	for name := range c.tokens {
		c.kubeconfigs[name] = c.file(t, "kubeconfig-"+name, c.kubeconfig(name))
	}
	c.waitAPI(t)

	c.start(t, "kube-controller-manager", c.tool(t, "kube-controller-manager"),
		"--kubeconfig", c.kubeconfigs["controller-manager"], "--leader-elect=false",
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(testinfra.FreePort(t)),
		"--authentication-kubeconfig", c.kubeconfigs["controller-manager"],
		"--authorization-kubeconfig", c.kubeconfigs["controller-manager"],
		"--service-account-private-key-file", saKey, "--root-ca-file", pki.CAFile,
		"--service-cluster-ip-range", ServiceCIDR, "--cluster-cidr", PodCIDR, "--allocate-node-cidrs=false",
		// Each controller as its own service account, with the role the
		// default RBAC gives it, as kubeadm runs it.
		"--use-service-account-credentials=true")
	c.start(t, "kube-scheduler", c.tool(t, "kube-scheduler"),
		"--kubeconfig", c.kubeconfigs["scheduler"], "--leader-elect=false",
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(testinfra.FreePort(t)),
		"--authentication-kubeconfig", c.kubeconfigs["scheduler"],
		"--authorization-kubeconfig", c.kubeconfigs["scheduler"])

	// Cluster DNS for Service names (the chart's helm test calls the
	// release by name); names outside the cluster get no answer.
	corefile := c.file(t, "Corefile", fmt.Sprintf(`cluster.local:53 in-addr.arpa:53 {
    bind %s
    errors
    kubernetes cluster.local in-addr.arpa {
        kubeconfig %s
        pods insecure
    }
    cache 5
}
.:53 {
    bind %s
    errors
}
`, DNSIP, c.kubeconfigs["admin"], DNSIP))
	c.start(t, "coredns", c.tool(t, "coredns"), "-conf", corefile)
}

// kubeconfig is a kubeconfig for the identity name.
func (c *Cluster) kubeconfig(name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: aifw
  cluster: {server: %q, certificate-authority: %q}
users:
- name: %s
  user: {token: %q}
contexts:
- name: aifw
  context: {cluster: aifw, user: %s}
current-context: aifw
`, c.APIServer, c.CAFile, name, c.tokens[name], name)
}

// waitAPI waits for the API server's readiness.
func (c *Cluster) waitAPI(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if st, _ := c.Do(t, "GET", "/readyz", ""); st == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready after 90s:\n%s", c.logTail("kube-apiserver", 30))
		}
	}
}
