package testinfra

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Netns is a network namespace a test made, joined to the host by a veth
// pair on a /24 of its own: for programs that bind every address
// (0.0.0.0) or fixed ports, which must not listen on the machine itself.
// The namespace has no default route: a packet for anything but its own
// /24 has nowhere to go, so nothing inside can reach past the host end of
// the pair. Programs run in it with Command, which `ip netns exec` gives
// the files written by WriteEtc in place of the machine's /etc ones (a
// hosts file naming the fake providers, a CA bundle holding the test CA)
// without touching the machine's.
type Netns struct {
	Name   string
	HostIP string // the host's end of the pair, x.y.z.1
	IP     string // the namespace's end, x.y.z.2
	etc    string
}

// NewNetns makes namespace name, its pair on prefix ("10.215.0") and
// removes both, the processes left in it and its /etc files at cleanup.
// It needs root and iproute2: without them the test skips (fails under
// CI=true).
func NewNetns(t testing.TB, name, prefix string) *Netns {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root", "network namespaces need root: run as root")
	}
	if LookPath("ip") == "" {
		Missing(t, "ip (iproute2)", "apt-get install iproute2")
	}
	n := &Netns{Name: name, HostIP: prefix + ".1", IP: prefix + ".2", etc: filepath.Join("/etc/netns", name)}
	n.remove() // a namespace an interrupted run left behind
	hostEnd, nsEnd := name+"-h", name+"-n"
	for _, args := range [][]string{
		{"netns", "add", name},
		{"link", "add", hostEnd, "type", "veth", "peer", "name", nsEnd},
		{"link", "set", nsEnd, "netns", name},
		{"addr", "add", n.HostIP + "/24", "dev", hostEnd},
		{"link", "set", hostEnd, "up"},
		{"-n", name, "addr", "add", n.IP + "/24", "dev", nsEnd},
		{"-n", name, "link", "set", nsEnd, "up"},
		{"-n", name, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			n.remove()
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(n.remove)
	return n
}

// WriteEtc writes a file the namespace's programs see at /etc/<rel>
// (`ip netns exec` binds /etc/netns/<name>/<first element> over the
// machine's). A directory written this way hides the machine's whole
// directory of that name inside the namespace.
func (n *Netns) WriteEtc(t testing.TB, rel, content string) {
	t.Helper()
	p := filepath.Join(n.etc, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Command runs name inside the namespace, in a process group of its own:
// ctx's end kills the group, children too (an agent's Envoy), and Wait
// gives up on their output 5 s later.
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// remove kills what still runs in the namespace, deletes it (its veth end
// goes with it, and the host's end with its peer) and its /etc files.
func (n *Netns) remove() {
	for i := 0; i < 50; i++ {
		out, err := exec.Command("ip", "netns", "pids", n.Name).Output()
		pids := strings.Fields(string(out))
		if err != nil || len(pids) == 0 {
			break
		}
		for _, p := range pids {
			var pid int
			if _, err := fmt.Sscan(p, &pid); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	exec.Command("ip", "netns", "delete", n.Name).Run()
	exec.Command("ip", "link", "delete", n.Name+"-h").Run()
	os.RemoveAll(n.etc)
	os.Remove(filepath.Dir(n.etc)) // /etc/netns, when nothing else is in it
}
