// Package dbtest starts Debian's PostgreSQL and Redis servers for tests: a
// private cluster or instance in a temporary directory, on a free loopback
// port, stopped when the test ends.
package dbtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"
)

// Postgres is a running private PostgreSQL cluster.
type Postgres struct {
	Host     string // 127.0.0.1
	Port     int
	User     string
	Password string
	DB       string

	bin, data string
	cred      *syscall.Credential
	cmd       *exec.Cmd
	exited    chan struct{}
}

// URL is the connection string of the cluster's default database.
func (p *Postgres) URL() string { return p.urlOf(p.DB) }

func (p *Postgres) urlOf(db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(p.User, p.Password),
		Host: net.JoinHostPort(p.Host, strconv.Itoa(p.Port)), Path: "/" + db}
	return u.String()
}

// CreateDB creates a database named name and returns its connection
// string: tests sharing a cluster each get their own.
func (p *Postgres) CreateDB(t testing.TB, name string) string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, p.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	return p.urlOf(name)
}

// postgresBin finds Debian's newest PostgreSQL server binaries.
func postgresBin(t testing.TB) string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(dirs) == 0 {
		t.Fatal("PostgreSQL is not installed: scripts/install-deps.sh installs Debian's postgresql")
	}
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(a))))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(b))))
		return va - vb
	})
	return filepath.Dir(dirs[len(dirs)-1])
}

// privateDir makes a temporary directory the server's user owns: initdb
// refuses to run as root, so as root the cluster runs as Debian's
// postgres user.
func privateDir(t testing.TB, prefix string) (string, *syscall.Credential) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() != 0 {
		return dir, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("running as root needs Debian's postgres user (package postgresql): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// StartPostgres initialises a cluster with password authentication over
// TCP and starts it on a free loopback port.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	return StartPostgresOn(t, "127.0.0.1")
}

// StartPostgresOn is StartPostgres listening on host, an address of an
// interface the test made, for clients in other network namespaces (pods):
// any client address may log in with the password.
func StartPostgresOn(t testing.TB, host string) *Postgres {
	t.Helper()
	bin := postgresBin(t)
	dir, cred := privateDir(t, "cocoon-pg-")
	p := &Postgres{Host: host, Port: freePort(t, host), User: "postgres", Password: "cocoon-test-password", DB: "postgres",
		bin: bin, data: filepath.Join(dir, "data"), cred: cred}
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(p.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		os.Chown(pw, int(cred.Uid), int(cred.Gid))
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", p.data, "-U", p.User, "--pwfile", pw,
		"--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	if host != "127.0.0.1" {
		hba, err := os.OpenFile(filepath.Join(p.data, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = hba.WriteString("host all all 0.0.0.0/0 scram-sha-256\n")
		if cerr := hba.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	p.start(t)
	t.Cleanup(func() { p.stop(syscall.SIGINT) })
	return p
}

func (p *Postgres) start(t testing.TB) {
	t.Helper()
	p.cmd = exec.Command(filepath.Join(p.bin, "postgres"), "-D", p.data, "-c", "listen_addresses="+p.Host,
		"-c", "port="+strconv.Itoa(p.Port), "-c", "unix_socket_directories="+filepath.Dir(p.data),
		"-c", "max_connections=200", "-c", "log_min_messages=panic")
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(p.cmd, p.exited)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, p.URL())
		cancel()
		if err == nil {
			c.Close(context.Background())
			return
		}
	}
	t.Fatal("postgres did not start")
}

// stop ends the server with sig (SIGINT: fast shutdown) and waits.
func (p *Postgres) stop(sig syscall.Signal) {
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// Restart stops the server (fast shutdown: connections are cut) and starts
// it again on the same port.
func (p *Postgres) Restart(t testing.TB) {
	t.Helper()
	p.stop(syscall.SIGINT)
	p.start(t)
}

// Redis is a running private redis-server.
type Redis struct {
	Addr string // 127.0.0.1:port
}

// URL is the server's redis:// URL.
func (r *Redis) URL() string { return "redis://" + r.Addr }

// StartRedis runs redis-server from a temporary configuration: loopback
// only, an append-only file synced at every write, no snapshots.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed: scripts/install-deps.sh installs Debian's redis-server")
	}
	dir := t.TempDir()
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))}
	host, port, _ := net.SplitHostPort(r.Addr)
	conf := fmt.Sprintf("bind %s\nport %s\ndir %s\nsave \"\"\nappendonly yes\nappendfsync always\nprotected-mode yes\n"+
		"daemonize no\nlogfile \"\"\nloglevel warning\n", host, port, dir)
	path := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, path)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := goredis.NewClient(&goredis.Options{Addr: r.Addr})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c.Ping(context.Background()).Err() == nil {
			return r
		}
	}
	t.Fatal("redis-server did not start")
	return nil
}

func freePort(t testing.TB, host string) int {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
