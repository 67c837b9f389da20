// Package cluster runs a real single-node Kubernetes cluster for the deploy
// tests: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
// CoreDNS, and a node of containerd (Debian's), runc, the kubelet and
// kube-proxy, with bridge networking on a pod range that never leaves the
// machine. Every Kubernetes program is built from the pinned modules under
// deploy/tools (make tools); images are built here from this machine's
// binaries, since nothing can be pulled.
//
// It needs root, cgroup v1 and Debian's containerd, runc,
// containernetworking-plugins, iptables and conntrack; without them a test
// skips with what to install (fails under CI=true). One cluster runs at a
// time (its bridge and addresses are fixed). Teardown, even after a failed
// test, kills every process it started and the containers under them,
// unmounts what they mounted, removes their network namespaces, cgroups,
// bridge and iptables rules, and puts back the sysctls the kubelet changes.
package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// Cluster is a running cluster.
type Cluster struct {
	APIServer string // https://127.0.0.1:port
	CAFile    string // the API server's CA
	Version   string // the firewall image's tag

	dir, tools, envoy string
	containerdSock    string
	tokens            map[string]string // identity: token
	kubeconfigs       map[string]string // identity: file
	procs             []*proc
	client            *http.Client
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  testinfra.LogBuffer
}

// Options say what the cluster runs.
type Options struct {
	Tools   string // directory of the built tools (.tools/bin)
	Envoy   string // the envoy binary for the Envoy image
	Version string // the firewall image's tag (the chart's appVersion)
}

// Start runs a cluster for the test and tears it down when the test ends.
func Start(t *testing.T, o Options) *Cluster {
	t.Helper()
	requireHost(t, func(what, how string) { testinfra.Missing(t, what, how) })
	c := &Cluster{Version: o.Version, tools: o.Tools, envoy: o.Envoy,
		tokens: map[string]string{}, kubeconfigs: map[string]string{}}
	for _, tool := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "coredns"} {
		c.tool(t, tool)
	}
	// Short: containerd's socket paths must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "aifw-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	h := prepareHost(t, dir)
	t.Cleanup(func() {
		c.stop(t)
		h.teardown(t)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	c.startControlPlane(t)
	c.startNode(t)
	return c
}

// Kubeconfig is the administrator's kubeconfig file (for helm).
func (c *Cluster) Kubeconfig() string { return c.kubeconfigs["admin"] }

// Dir is where the cluster keeps its files (pod logs under pod-logs/).
func (c *Cluster) Dir() string { return c.dir }

// Do sends an API request as the administrator; body is JSON or "".
func (c *Cluster) Do(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	if c.client == nil {
		return 0, "the API server has not started"
	}
	return APIRequest(c.client, c.APIServer, c.tokens["admin"], method, path, body)
}

// APIRequest sends a Kubernetes API request with a bearer token; body is
// JSON (a merge patch for PATCH) or "". It returns the status and body, or
// 0 and the error.
func APIRequest(client *http.Client, base, token, method, path, body string) (int, string) {
	req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
	req.Header.Set("authorization", "Bearer "+token)
	req.Header.Set("content-type", "application/json")
	if method == "PATCH" {
		req.Header.Set("content-type", "application/merge-patch+json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// start runs a program of the cluster; stop ends them in reverse order.
func (c *Cluster) start(t *testing.T, name, bin string, args ...string) {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...)}
	p.cmd.Stdout, p.cmd.Stderr = &p.log, &p.log
	p.cmd.Dir = c.dir
	// Its own process group: a kill reaches what it started too.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	c.procs = append(c.procs, p)
}

// stop kills the cluster's programs, node first, and the containers.
func (c *Cluster) stop(t *testing.T) {
	if t.Failed() {
		t.Logf("the cluster's pods and events:\n%s", c.describe(t))
	}
	node := map[string]bool{"kubelet": true, "kube-proxy": true}
	for _, p := range c.procs {
		if node[p.name] {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			_ = p.cmd.Wait()
		}
	}
	killShims(c.dir)
	for _, p := range slices.Backward(c.procs) {
		if !node[p.name] {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			_ = p.cmd.Wait()
		}
	}
	if t.Failed() {
		for _, p := range c.procs {
			t.Logf("%s (tail):\n%s", p.name, testinfra.Tail(p.log.String(), 15))
		}
	}
}

func (c *Cluster) logTail(name string, n int) string {
	for _, p := range c.procs {
		if p.name == name {
			return testinfra.Tail(p.log.String(), n)
		}
	}
	return ""
}

// tool is a built tool's path.
func (c *Cluster) tool(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(c.tools, name)
	if _, err := os.Stat(p); err != nil {
		testinfra.Missing(t, name, "build it with `make tools`")
	}
	return p
}

// file writes a file under the cluster's directory and returns its path.
func (c *Cluster) file(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// WriteServiceAccountKeys writes into dir the key pair an API server signs
// service account tokens with, and returns the two files.
func WriteServiceAccountKeys(t testing.TB, dir string) (key, pub string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(k)
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	key, pub = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, pub
}

// containsCondition says whether an object's status (JSON) has the
// condition typ with status st.
func containsCondition(body, typ, st string) bool {
	var o struct {
		Status struct {
			Conditions []struct{ Type, Status string } `json:"conditions"`
		} `json:"status"`
	}
	if json.Unmarshal([]byte(body), &o) != nil {
		return false
	}
	return slices.ContainsFunc(o.Status.Conditions, func(c struct{ Type, Status string }) bool {
		return c.Type == typ && c.Status == st
	})
}

// describe is what a failed test needs to see: each pod's phase and why
// its containers wait or ended, and the warnings among the events.
func (c *Cluster) describe(t *testing.T) string {
	var b strings.Builder
	_, body := c.Do(t, "GET", "/api/v1/pods", "")
	var pods struct {
		Items []struct {
			Metadata struct{ Namespace, Name string } `json:"metadata"`
			Status   struct {
				Phase    string `json:"phase"`
				Statuses []struct {
					Name  string         `json:"name"`
					Ready bool           `json:"ready"`
					State map[string]any `json:"state"`
				} `json:"containerStatuses"`
				Init []struct {
					Name  string         `json:"name"`
					Ready bool           `json:"ready"`
					State map[string]any `json:"state"`
				} `json:"initContainerStatuses"`
			} `json:"status"`
		} `json:"items"`
	}
	_ = json.Unmarshal([]byte(body), &pods)
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s/%s %s\n", p.Metadata.Namespace, p.Metadata.Name, p.Status.Phase)
		for _, s := range append(p.Status.Init, p.Status.Statuses...) {
			st, _ := json.Marshal(s.State)
			fmt.Fprintf(&b, "  %s ready=%v %s\n", s.Name, s.Ready, st)
		}
	}
	// The containers' own words (the kubelet's log files), last lines.
	logs, _ := filepath.Glob(filepath.Join(c.dir, "pod-logs", "*", "*", "*.log"))
	for _, f := range logs {
		raw, _ := os.ReadFile(f)
		rel, _ := filepath.Rel(filepath.Join(c.dir, "pod-logs"), f)
		fmt.Fprintf(&b, "log %s:\n%s\n", rel, testinfra.Tail(string(raw), 8))
	}
	_, body = c.Do(t, "GET", "/api/v1/events?fieldSelector=type%3DWarning", "")
	var events struct {
		Items []struct {
			Involved struct{ Kind, Name string } `json:"involvedObject"`
			Reason   string                      `json:"reason"`
			Message  string                      `json:"message"`
		} `json:"items"`
	}
	_ = json.Unmarshal([]byte(body), &events)
	for _, e := range events.Items {
		fmt.Fprintf(&b, "event %s/%s %s: %s\n", e.Involved.Kind, e.Involved.Name, e.Reason, e.Message)
	}
	return b.String()
}
