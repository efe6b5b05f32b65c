package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMeasuredReferenceValueRegisters is the owner's flow before any pod
// runs: cocoon-measure prints the RVPS message for an initdata document and
// kbs-client registers it in a real KBS, where the policy will look it up.
func TestMeasuredReferenceValueRegisters(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "initdata.toml")
	if err := os.WriteFile(doc, []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	msg, err := exec.Command(bin(t, "cocoon-measure"), "initdata", doc, "--message").Output()
	if err != nil {
		t.Fatalf("cocoon-measure: %v", err)
	}
	hostData, err := exec.Command(bin(t, "cocoon-measure"), "initdata", doc, "-o", "json").Output()
	if err != nil {
		t.Fatalf("cocoon-measure -o json: %v", err)
	}
	msgFile := filepath.Join(dir, "rv.json")
	if err := os.WriteFile(msgFile, msg, 0o600); err != nil {
		t.Fatal(err)
	}

	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", "")
	k := startKBS(t, cfg, url, data, nil)
	admin := []string{"--url", url, "config", "--auth-private-key", k.adminKey()}
	mustClient(t, append(admin, "set-reference-value", "--message-file", msgFile)...)
	got := mustClient(t, append(admin, "get-reference-value", "--id", "snp_host_data")...)
	var printed struct {
		HostData []string `json:"snp_host_data"`
	}
	if err := json.Unmarshal(hostData, &printed); err != nil || len(printed.HostData) != 1 {
		t.Fatalf("cocoon-measure -o json printed %s (%v)", hostData, err)
	}
	if !strings.Contains(got, printed.HostData[0]) {
		t.Fatalf("registered snp_host_data %s, cocoon-measure printed %s", got, hostData)
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"version":"0.1.0","type":"sample","payload":"not base64!"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := kbsClient(t, append(admin, "set-reference-value", "--message-file", bad)...); err == nil {
		t.Fatal("a malformed RVPS message was accepted")
	}
}
