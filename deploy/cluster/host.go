package cluster

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The cluster's addresses. Pods get 10.213.0.0/24 on the bridge aifw0,
// whose host end 10.213.0.1 is the node, the API server, DNS and the
// test's own servers (Redis, the fake provider). Services get
// 10.214.0.0/24. A FORWARD rule drops whatever a pod sends elsewhere, and
// nothing masquerades: no packet of the cluster leaves the machine.
const (
	Bridge      = "aifw0"
	PodCIDR     = "10.213.0.0/24"
	NodeIP      = "10.213.0.1"
	ServiceCIDR = "10.214.0.0/24"
	DNSIP       = NodeIP
	cgroupRoot  = "/aifw-test"
	nodeName    = "aifw-node"
)

// The kubelet, kube-proxy and the bridge plugin set these at start; the
// machine gets its own values back.
var sysctls = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory",
	"net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
}

// host is what the cluster changes on the machine, recorded before it
// starts so teardown can put it back.
type host struct {
	dir      string
	sysctls  map[string]string
	iptables map[string][]byte // iptables-save output by command
	// Directories containerd and the CNI plugins use whatever they are
	// told: what each held before, nil when it did not exist.
	shared map[string]map[string]bool
}

// sharedDirs are containerd's network namespaces and shim sockets, and
// libcni's result cache.
var sharedDirs = []string{"/var/run/netns", "/run/containerd/s", "/var/lib/cni/results"}

// requireHost skips (fails under CI=true) unless the test runs as root
// with the packages the node needs.
func requireHost(t *testing.T, missing func(what, how string)) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing("root", "the live cluster runs containerd and a kubelet: run make test-deploy as root")
	}
	for _, p := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables-save", "iptables-restore", "conntrack", "ip"} {
		if _, err := exec.LookPath(p); err != nil {
			missing(p, "apt-get install containerd runc containernetworking-plugins iptables conntrack iproute2")
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBin, p)); err != nil {
			missing("CNI plugin "+p, "apt-get install containernetworking-plugins")
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		missing("cgroup v1 hierarchy", "the test cluster's kubelet is set up for cgroup v1 (cgroupfs driver)")
	}
}

const cniBin = "/usr/lib/cni"

func prepareHost(t *testing.T, dir string) *host {
	t.Helper()
	h := &host{dir: dir, sysctls: map[string]string{}, iptables: map[string][]byte{}}
	for _, k := range sysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			h.sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	for _, c := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(c).Output()
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		h.iptables[c] = out
	}
	h.shared = map[string]map[string]bool{}
	for _, d := range append(sharedDirs, "/run/containerd", "/var/lib/cni") {
		if _, err := os.Stat(d); err == nil {
			h.shared[d] = entries(d)
		}
	}
	if err := exec.Command("ip", "link", "show", Bridge).Run(); err == nil {
		t.Fatalf("a bridge %s exists already: another test cluster runs, or one was not torn down (ip link del %s)", Bridge, Bridge)
	}
	// The kubelet puts its pods' cgroups under cgroupRoot in every
	// hierarchy and wants it there; cpuset's needs its parent's CPUs and
	// memory nodes before anything can join it.
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, hier := range hierarchies {
		if filepath.Base(hier) == "unified" {
			continue
		}
		if err := os.Mkdir(hier+cgroupRoot, 0o755); err != nil && !os.IsExist(err) {
			t.Fatalf("cgroup: %v", err)
		}
	}
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		b, err := os.ReadFile("/sys/fs/cgroup/cpuset/" + f)
		if err == nil {
			err = os.WriteFile("/sys/fs/cgroup/cpuset"+cgroupRoot+"/"+f, b, 0o644)
		}
		if err != nil {
			t.Fatalf("cgroup cpuset: %v", err)
		}
	}
	run(t, "ip", "link", "add", Bridge, "type", "bridge")
	run(t, "ip", "addr", "add", NodeIP+"/24", "dev", Bridge)
	run(t, "ip", "link", "set", Bridge, "up")
	// Pods reach each other, Services and the node; nothing else.
	run(t, "iptables", "-I", "FORWARD", "1", "-s", PodCIDR, "!", "-d", PodCIDR, "-j", "DROP")
	return h
}

// teardown puts the machine back: every process the cluster started is
// gone by now (the caller kills them first); what they left is removed.
func (h *host) teardown(t *testing.T) {
	var errs []string
	note := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	killShims(h.dir)
	// Mounts under the cluster's directory (pod volumes, overlay
	// snapshots, shm), deepest first.
	for _, m := range mountsUnder(h.dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			note("umount %s: %v", m, err)
		}
	}
	for _, d := range sharedDirs {
		for name := range entries(d) {
			if h.shared[d] != nil && h.shared[d][name] {
				continue
			}
			p := filepath.Join(d, name)
			_ = syscall.Unmount(p, syscall.MNT_DETACH) // a network namespace
			if err := os.RemoveAll(p); err != nil {
				note("remove %s: %v", p, err)
			}
		}
	}
	for _, d := range []string{"/run/containerd", "/var/lib/cni"} {
		if h.shared[d] == nil {
			if err := os.RemoveAll(d); err != nil {
				note("remove %s: %v", d, err)
			}
		}
	}
	// iptables-restore adds the saved rules to what is there: empty every
	// table first (iptables-save prints nothing for an empty one).
	for c := range h.iptables {
		bin := strings.TrimSuffix(c, "-save")
		for _, table := range []string{"filter", "nat", "mangle", "raw", "security"} {
			_ = exec.Command(bin, "-t", table, "-F").Run()
			_ = exec.Command(bin, "-t", table, "-X").Run()
		}
	}
	for c, saved := range h.iptables {
		restore := exec.Command(strings.Replace(c, "-save", "-restore", 1))
		restore.Stdin = bytes.NewReader(saved)
		if out, err := restore.CombinedOutput(); err != nil {
			note("%s: %v %s", restore.Path, err, out)
		}
	}
	// Chains iptables-restore leaves alone: tables it was not given.
	_ = exec.Command("conntrack", "-D", "-s", PodCIDR).Run()
	if err := exec.Command("ip", "link", "del", Bridge).Run(); err != nil {
		note("ip link del %s: %v", Bridge, err)
	}
	removeCgroups(note)
	for k, v := range h.sysctls {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			note("sysctl %s=%s: %v", k, v, err)
		}
	}
	if len(errs) > 0 {
		t.Errorf("cluster teardown left things behind:\n%s", strings.Join(errs, "\n"))
	}
}

// killShims kills the containerd shims of this cluster (they outlive
// containerd by design) and the containers under them.
func killShims(dir string) {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte("containerd-shim")) || !bytes.Contains(b, []byte(dir)) {
			continue
		}
		var pid int
		fmt.Sscan(p.Name(), &pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// The containers themselves are in the cluster's cgroups.
	for _, tasks := range cgroupFiles("cgroup.procs") {
		b, _ := os.ReadFile(tasks)
		for _, f := range strings.Fields(string(b)) {
			var pid int
			fmt.Sscan(f, &pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// removeCgroups removes the cluster's cgroups in every hierarchy, children
// before parents; processes killed a moment ago may take a little while
// to leave them.
func removeCgroups(note func(string, ...any)) {
	for range 25 {
		var left []string
		removeCgroupsOnce(func(format string, a ...any) { left = append(left, fmt.Sprintf(format, a...)) })
		if len(left) == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	removeCgroupsOnce(note)
}

func removeCgroupsOnce(note func(string, ...any)) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*" + cgroupRoot)
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				note("remove cgroup %s: %v", d, err)
			}
		}
	}
}

func cgroupFiles(name string) []string {
	var out []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*" + cgroupRoot)
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && d.Name() == name {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

// mountsUnder lists the mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append(out, fields[4])
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if di, dj := strings.Count(out[i], "/"), strings.Count(out[j], "/"); di != dj {
			return di > dj
		}
		return out[i] < out[j]
	})
	return slices.Compact(out)
}

func entries(dir string) map[string]bool {
	m := map[string]bool{}
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		m[e.Name()] = true
	}
	return m
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
