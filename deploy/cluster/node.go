package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// startNode runs containerd, the kubelet and kube-proxy: one node whose
// pods sit on the bridge, in cgroups under /aifw-test, with every file of
// theirs under the cluster's directory.
func (c *Cluster) startNode(t *testing.T) {
	t.Helper()
	c.containerdSock = filepath.Join(c.dir, "containerd", "containerd.sock")
	cniConf := filepath.Join(c.dir, "cni", "net.d")
	if err := os.MkdirAll(cniConf, 0o755); err != nil {
		t.Fatal(err)
	}
	// ipMasq off and the FORWARD rule of prepareHost: pods reach the node
	// and each other only.
	c.file(t, "cni/net.d/10-aifw.conflist", fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "aifw",
  "plugins": [{
    "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {
      "type": "host-local", "dataDir": %q,
      "ranges": [[{"subnet": %q, "gateway": %q, "rangeStart": "10.213.0.10"}]],
      "routes": [{"dst": "0.0.0.0/0"}]
    }
  }]
}
`, Bridge, filepath.Join(c.dir, "cni", "ipam"), PodCIDR, NodeIP))
	// restrict_oom_score_adj: a container may not be given a lower OOM
	// score than containerd's own, which is not 0 inside this sandbox.
	cfg := c.file(t, "containerd/config.toml", fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
`, filepath.Join(c.dir, "containerd", "root"), filepath.Join(c.dir, "containerd", "state"), c.containerdSock,
		filepath.Join(c.dir, "containerd", "opt"), PauseImage, cniBin, cniConf, filepath.Join(c.dir, "runc")))
	c.start(t, "containerd", "containerd", "--config", cfg)
	testinfra.WaitUnix(t, c.containerdSock, 30*time.Second)
	c.importImages(t)

	// The pods' resolv.conf is the kubelet's, pointing at cluster DNS; this
	// file is what "Default" DNS policy would copy: nothing.
	resolv := c.file(t, "kubelet/resolv.conf", "")
	kubeletCfg := c.file(t, "kubelet/config.yaml", fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
cgroupDriver: cgroupfs
cgroupRoot: %s
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
clusterDNS: [%s]
clusterDomain: cluster.local
resolvConf: %s
podLogsDir: %s
registerNode: true
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
protectKernelDefaults: false
maxPods: 30
`, testinfra.FreePort(t), testinfra.FreePort(t), cgroupRoot, c.containerdSock, DNSIP, resolv, filepath.Join(c.dir, "pod-logs")))
	c.start(t, "kubelet", c.tool(t, "kubelet"), "--config", kubeletCfg,
		"--kubeconfig", c.kubeconfigs["kubelet"], "--hostname-override", nodeName, "--node-ip", NodeIP,
		"--root-dir", filepath.Join(c.dir, "kubelet", "root"), "--cert-dir", filepath.Join(c.dir, "kubelet", "pki"))

	c.start(t, "kube-proxy", c.tool(t, "kube-proxy"), "--kubeconfig", c.kubeconfigs["kube-proxy"],
		"--hostname-override", nodeName, "--cluster-cidr", PodCIDR, "--proxy-mode", "iptables",
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t)),
		"--healthz-bind-address", fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t)),
		// Leave the machine's conntrack table size alone.
		"--conntrack-max-per-core", "0")
	c.waitNodeReady(t)
}

// waitNodeReady waits until the node reports Ready.
func (c *Cluster) waitNodeReady(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(time.Second) {
		_, body := c.Do(t, "GET", "/api/v1/nodes/"+nodeName, "")
		if containsCondition(body, "Ready", "True") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not Ready after 120s: %s\nkubelet:\n%s\ncontainerd:\n%s", testinfra.Tail(body, 20),
				c.logTail("kubelet", 40), c.logTail("containerd", 20))
		}
	}
}
