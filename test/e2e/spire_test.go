package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// spireBin is a binary of make spire-bins' cache.
func spireBin(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(testutil.ToolDir("COCOON_SPIRE_BIN", "spire", "v1.13.3"), name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("SKIP: %s not built (make spire-bins): %v", name, err)
	}
	return p
}

// TestSPIRENodeAttestation runs a real spire-server and spire-agent with
// the cocoon NodeAttestor plugins against the kbs binary: the agent
// attests (sample TEE, allowed by the server's configuration) and the
// server lists it under its TEE-key ID with the cocoon selectors.
func TestSPIRENodeAttestation(t *testing.T) {
	server, agent := spireBin(t, "spire-server"), spireBin(t, "spire-agent")
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", "")
	k := startKBS(t, cfg, url, data, nil)
	provisionSample(t, url, k.adminKey())
	dir, err := os.MkdirTemp("", "spire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port := freePort(t)
	serverSock := filepath.Join(dir, "server.sock")
	serverConf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = "example.org"
  data_dir = %q
  log_level = "DEBUG"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "cocoon" {
    plugin_cmd = %q
    plugin_data {
      kbs_url = %q
      allow_sample = true
    }
  }
}
`, port, serverSock, filepath.Join(dir, "server"), filepath.Join(dir, "server", "datastore.sqlite3"),
		bin(t, "spire-server-nodeattestor-cocoon"), url)
	agentConf := fmt.Sprintf(`agent {
  data_dir = %q
  log_level = "DEBUG"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_domain = "example.org"
  insecure_bootstrap = true
}
plugins {
  NodeAttestor "cocoon" {
    plugin_cmd = %q
    plugin_data {
      kbs_url = %q
      attester = "sample"
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(dir, "agent"), port, filepath.Join(dir, "agent.sock"), bin(t, "spire-agent-nodeattestor-cocoon"), url)
	for name, text := range map[string]string{"server.conf": serverConf, "agent.conf": agentConf} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srvLog := startSPIRE(t, server, "run", "-config", filepath.Join(dir, "server.conf"))
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		if exec.Command(server, "healthcheck", "-socketPath", serverSock).Run() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spire-server not healthy:\n%s", srvLog)
		}
	}
	agentLog := startSPIRE(t, agent, "run", "-config", filepath.Join(dir, "agent.conf"))
	var out []byte
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		out, _ = exec.Command(server, "agent", "list", "-socketPath", serverSock).CombinedOutput()
		if strings.Contains(string(out), "spiffe://example.org/spire/agent/cocoon/") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cocoon agent attested: %s\nserver:\n%s\nagent:\n%s", out, srvLog, agentLog)
		}
	}
	_, id, _ := strings.Cut(string(out), "SPIFFE ID         : ")
	id, _, _ = strings.Cut(id, "\n")
	show, err := exec.Command(server, "agent", "show", "-socketPath", serverSock, "-spiffeID", id).CombinedOutput()
	if err != nil || !strings.Contains(string(show), "cocoon:tee:sample") || !strings.Contains(string(show), "cocoon:status:affirming") {
		t.Errorf("agent show %s: %v\n%s", id, err, show)
	}
}

// startSPIRE runs a SPIRE binary until the test ends; its output goes to
// the returned buffer.
func startSPIRE(t *testing.T, path string, args ...string) *strings.Builder {
	t.Helper()
	var log strings.Builder
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return &log
}
