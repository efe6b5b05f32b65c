// Package e2e starts the real binaries and drives them with real clients.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/kbs/client"
)

// bin returns the path of a Cocoon binary (testutil.Bin).
func bin(t testing.TB, name string) string { return testutil.Bin(t, name) }

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a running binary.
type proc struct {
	t       testing.TB
	cmd     *exec.Cmd
	log     *bytes.Buffer
	URL     string
	DataDir string
	Config  string
}

// kbsConfig writes a configuration for a KBS on a free loopback port with
// an embedded store in dataDir; extra is more TOML.
func kbsConfig(t testing.TB, dataDir, scheme, extra string) (path, url string) {
	port := freePort(t)
	insecure := scheme == "http"
	// extra comes first so that it may set top-level keys.
	cfg := fmt.Sprintf(`%s
[http_server]
sockets = ["127.0.0.1:%d"]
insecure_http = %v

[storage_backend]
storage_type = "Embedded"

[storage_backend.backends.embedded]
path = %q
`, extra, port, insecure, dataDir)
	path = filepath.Join(t.TempDir(), "kbs.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
}

// startKBS runs the kbs binary with config and waits until it is healthy.
func startKBS(t testing.TB, config, url, dataDir string, client *http.Client) *proc {
	t.Helper()
	p := startProcess(t, "kbs", url, client, "--config", config)
	p.DataDir, p.Config = dataDir, config
	return p
}

// startProcess runs a binary serving url and waits until its /healthz
// answers.
func startProcess(t testing.TB, name, url string, client *http.Client, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, log: &bytes.Buffer{}, URL: url}
	p.cmd = exec.Command(bin(t, name), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	if client == nil {
		client = http.DefaultClient
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := client.Get(url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if p.cmd.ProcessState != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop()
	t.Fatalf("%s did not become healthy:\n%s", name, p.log)
	return nil
}

func (p *proc) stop() {
	if p.cmd.Process == nil || p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
	if p.t.Failed() {
		p.t.Logf("%s log:\n%s", p.cmd.Path, p.log)
	}
}

// adminKey is the admin private key the KBS generated in its data dir.
func (p *proc) adminKey() string { return filepath.Join(p.DataDir, "admin", "private.key") }

// kbsClient runs the kbs-client binary and returns its stdout.
func kbsClient(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin(t, "kbs-client"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func mustClient(t testing.TB, args ...string) string {
	t.Helper()
	out, err := kbsClient(t, args...)
	if err != nil {
		t.Fatalf("kbs-client %v: %v", args, err)
	}
	return out
}

// setResource stores data at path through kbs-client, as an owner would;
// global are kbs-client's global flags (--url, --cert-file).
func setResource(t *testing.T, global []string, adminKey, path string, data []byte) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "resource")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	mustClient(t, append(append([]string{}, global...), "config", "--auth-private-key", adminKey,
		"set-resource", "--path", path, "--resource-file", file)...)
}

// fetchAttested runs a whole RCAR handshake with att's evidence (and the
// devices of o), in a session of its own, and fetches the resource at path.
func fetchAttested(url string, att attester.Attester, o client.Options, path string) ([]byte, error) {
	jar, _ := cookiejar.New(nil)
	o.HTTP = &http.Client{Jar: jar}
	c, err := client.New(url, att, o)
	if err != nil {
		return nil, err
	}
	return c.GetResource(context.Background(), path)
}
