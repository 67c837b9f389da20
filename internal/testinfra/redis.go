package testinfra

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Redis is a real redis-server on a loopback port, without persistence.
type Redis struct {
	t    testing.TB
	bin  string
	Host string // the address it binds: 127.0.0.1 unless StartRedisOn says
	Port int
	args []string // more redis-server arguments
	dir  string   // its working directory (a replica writes the RDB there)
	cmd  *exec.Cmd
	log  LogBuffer
}

// StartRedis starts redis-server for the test and stops it at cleanup.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	return StartRedisOn(t, "127.0.0.1")
}

// StartRedisOn is StartRedis on host, an address of this machine (a test
// cluster's node address, for its pods).
func StartRedisOn(t testing.TB, host string) *Redis {
	t.Helper()
	bin := LookPath("redis-server")
	if bin == "" {
		Missing(t, "redis-server", "install it with `apt-get install redis-server`")
	}
	r := &Redis{t: t, bin: bin, Host: host, Port: FreePort(t), dir: t.TempDir()}
	r.Start()
	t.Cleanup(func() { r.Stop() })
	return r
}

// Addr is host:port.
func (r *Redis) Addr() string { return fmt.Sprintf("%s:%d", r.Host, r.Port) }

// URL is the redis:// URL of database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Start (re)starts the server on the same port.
func (r *Redis) Start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "--port", strconv.Itoa(r.Port), "--bind", r.Host,
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		// A replica writes the RDB its primary sends: in the test's
		// directory, not the package's.
		"--dir", r.dir,
		// Off the loopback (a test cluster's pods call it), protected mode
		// would refuse every client: there is no password.
		"--protected-mode", map[bool]string{true: "yes", false: "no"}[r.Host == "127.0.0.1"])
	r.cmd.Args = append(r.cmd.Args, r.args...)
	r.cmd.Stdout, r.cmd.Stderr = &r.log, &r.log
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	WaitTCP(r.t, r.Addr(), 10*time.Second)
}

// Stop kills the server (SIGKILL: a crash, not a shutdown).
func (r *Redis) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// StartRedisCluster starts a three-master Redis Cluster on loopback and
// returns a redis+cluster:// URL for it.
func StartRedisCluster(t testing.TB) string {
	t.Helper()
	bin, cli := LookPath("redis-server"), LookPath("redis-cli")
	if bin == "" || cli == "" {
		Missing(t, "redis-server and redis-cli", "install them with `apt-get install redis-server`")
	}
	var addrs []string
	for range 3 {
		port := FreePort(t)
		dir := t.TempDir()
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
			"--cluster-config-file", dir+"/nodes.conf", "--dir", dir, "--save", "", "--appendonly", "no")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		WaitTCP(t, addr, 10*time.Second)
		addrs = append(addrs, addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	// Wait until every node agrees the cluster is up.
	for _, a := range addrs {
		host, port, _ := strings.Cut(a, ":")
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			out, _ := exec.Command(cli, "-h", host, "-p", port, "cluster", "info").Output()
			if strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster not ok on %s: %s", a, out)
			}
		}
	}
	return "redis+cluster://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2]
}

// StartRedisTLS starts redis-server serving TLS only, with a certificate
// from p, and returns its rediss:// URL.
func StartRedisTLS(t testing.TB, p *PKI) string {
	t.Helper()
	bin := LookPath("redis-server")
	if bin == "" {
		Missing(t, "redis-server", "install it with `apt-get install redis-server`")
	}
	port := FreePort(t)
	cmd := exec.Command(bin, "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", p.CertFile, "--tls-key-file", p.KeyFile, "--tls-ca-cert-file", p.CAFile,
		"--tls-auth-clients", "no", "--save", "", "--appendonly", "no")
	var log LogBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server with TLS: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	WaitTCP(t, addr, 10*time.Second)
	return "rediss://" + addr + "/0"
}

// StartRedisSentinel starts a master and one Sentinel watching it as
// "mymaster", and returns a redis+sentinel:// URL.
func StartRedisSentinel(t testing.TB) string {
	t.Helper()
	master := StartRedis(t)
	addr := startSentinel(t, master.bin, fmt.Sprintf("sentinel monitor mymaster 127.0.0.1 %d 1\n", master.Port))
	return fmt.Sprintf("redis+sentinel://%s?master_name=mymaster", addr)
}

// startSentinel runs one Sentinel with conf (after its port and bind
// lines) and returns its address.
func startSentinel(t testing.TB, bin, conf string) string {
	t.Helper()
	port := FreePort(t)
	file := fmt.Sprintf("%s/sentinel.conf", t.TempDir())
	if err := os.WriteFile(file, []byte(fmt.Sprintf("port %d\nbind 127.0.0.1\n%s", port, conf)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, file, "--sentinel")
	var log LogBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sentinel: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	WaitTCP(t, addr, 10*time.Second)
	return addr
}

// PID is the process id.
func (r *Redis) PID() int { return r.cmd.Process.Pid }

// Sentinel is Redis the way Sentinel deployments run it: a primary, a
// replica, and three Sentinels (quorum two) watching them as "mymaster".
type Sentinel struct {
	Primary, Replica *Redis
	URL              string   // redis+sentinel:// naming all three Sentinels
	Addrs            []string // the Sentinels' addresses
}

// StartSentinel starts it; a primary silent for downAfter is failed over.
func StartSentinel(t testing.TB, downAfter time.Duration) *Sentinel {
	t.Helper()
	s := &Sentinel{Primary: StartRedis(t)}
	bin := s.Primary.bin
	s.Replica = &Redis{t: t, bin: bin, Host: "127.0.0.1", Port: FreePort(t), dir: t.TempDir(),
		args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(s.Primary.Port)}}
	s.Replica.Start()
	t.Cleanup(s.Replica.Stop)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, _ := exec.Command(strings.TrimSuffix(bin, "redis-server")+"redis-cli", "-p", strconv.Itoa(s.Replica.Port), "info", "replication").Output()
		if strings.Contains(string(out), "master_link_status:up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not reach its primary: %s", out)
		}
	}
	for range 3 {
		s.Addrs = append(s.Addrs, startSentinel(t, bin, fmt.Sprintf("sentinel monitor mymaster 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds mymaster %d\nsentinel failover-timeout mymaster 10000\n",
			s.Primary.Port, downAfter.Milliseconds())))
	}
	s.URL = fmt.Sprintf("redis+sentinel://%s?master_name=mymaster&addr=%s&addr=%s", s.Addrs[0], s.Addrs[1], s.Addrs[2])
	return s
}
