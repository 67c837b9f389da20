package testinfra

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Postgres is a PostgreSQL server of the test's own: Debian's binaries, a
// data directory under the test's, listening on loopback only, trusting
// its local clients (nothing else can reach it).
type Postgres struct {
	t    testing.TB
	bin  string
	dir  string
	Port int
	cred *syscall.Credential
	cmd  *exec.Cmd
	log  LogBuffer
}

// StartPostgres starts one and stops it at cleanup. PostgreSQL refuses to
// run as root: as root, the server runs as the postgres user.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		Missing(t, "PostgreSQL", "apt-get install postgresql")
	}
	p := &Postgres{t: t, bin: filepath.Dir(bins[len(bins)-1]), Port: FreePort(t)}
	dir, err := os.MkdirTemp("", "aifw-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			Missing(t, "the postgres user", "apt-get install postgresql (it creates the user)")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	initdb := p.command("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	p.Start()
	t.Cleanup(p.Stop)
	return p
}

func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(p.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

// URL is its connection URL.
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.Port)
}

// Start (re)starts the server on its port and waits for it to answer.
func (p *Postgres) Start() {
	p.t.Helper()
	p.cmd = p.command("postgres", "-D", filepath.Join(p.dir, "data"), "-p", strconv.Itoa(p.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+p.dir, "-c", "fsync=off")
	p.cmd.Stdout, p.cmd.Stderr = &p.log, &p.log
	// A group of its own: Stop kills the postmaster and its backends at
	// once, so a restart finds no process attached to the old memory.
	p.cmd.SysProcAttr.Setpgid = true
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start postgres: %v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if p.command("pg_isready", "-h", "127.0.0.1", "-p", strconv.Itoa(p.Port)).Run() == nil {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("postgres did not start:\n%s", Tail(p.log.String(), 20))
		}
	}
}

// Stop kills the server (SIGKILL: a crash, as a database outage is).
func (p *Postgres) Stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.cmd.Wait()
	p.cmd = nil
	// Its children (background workers) go with the postmaster's death;
	// wait until the port is free again for a restart.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if p.command("pg_isready", "-h", "127.0.0.1", "-p", strconv.Itoa(p.Port)).Run() != nil {
			return
		}
	}
}
