package imagetest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a running Debian docker-registry (distribution).
type Registry struct {
	Host    string // 127.0.0.1:port
	Storage string
}

// StartRegistry runs docker-registry on a free loopback port with storage
// in a temporary directory; the test is skipped when it is not installed.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	return startRegistry(t, "127.0.0.1:0", "")
}

// StartRegistryOn is StartRegistry listening on addr (host:port), an
// address of an interface the test made, for clients in other network
// namespaces.
func StartRegistryOn(t testing.TB, addr string) *Registry {
	t.Helper()
	return startRegistry(t, addr, "")
}

// StartRegistryWithAuth is StartRegistry with basic authentication: one
// user, its password in a bcrypt htpasswd file.
func StartRegistryWithAuth(t testing.TB, user, password string) *Registry {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startRegistry(t, "127.0.0.1:0", fmt.Sprintf("auth:\n  htpasswd:\n    realm: cocoon\n    path: %s\n", htpasswd))
}

func startRegistry(t testing.TB, addr, extra string) *Registry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Skip("docker-registry not installed (scripts/install-deps.sh)")
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close()
	r := &Registry{Host: host, Storage: t.TempDir()}
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n"+
		"  delete:\n    enabled: true\nhttp:\n  addr: %s\n", r.Storage, host) + extra
	path := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + host + "/v2/"); err == nil && resp.StatusCode != http.StatusServiceUnavailable {
			resp.Body.Close()
			return r
		}
	}
	t.Fatal("docker-registry did not start")
	return nil
}

// Push copies img into the registry as repo:tag with skopeo and env (for
// ocicrypt's key provider configuration) and extra skopeo copy flags.
func (r *Registry) Push(t testing.TB, img *Image, repo string, env []string, flags ...string) {
	t.Helper()
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Skip("skopeo not installed (scripts/install-deps.sh)")
	}
	layout := t.TempDir()
	img.WriteLayout(t, layout, "latest")
	args := append([]string{"copy", "--dest-tls-verify=false"}, flags...)
	args = append(args, "oci:"+layout+":latest", "docker://"+r.Host+"/"+repo)
	cmd := exec.Command("skopeo", args...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo %v: %v\n%s", args, err, out)
	}
}

// BlobPath is where the registry stores blob hex.
func (r *Registry) BlobPath(hex string) string {
	return filepath.Join(r.Storage, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
}
