package main

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/initdata"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/rvps"
	"github.com/cocoon-cc/cocoon/store/memory"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func amdSevFixture(t *testing.T) string {
	return filepath.Join(testutil.Fixtures(t), "sev-snp-measure", "tests", "fixtures", "ovmf_AmdSev_suffix.bin")
}

// The sev-snp-measure README's invocation with its test inputs
// (tests/test_guest.py test_snp_default).
const upstreamDigest = "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"

func snpArgs(t *testing.T, extra ...string) []string {
	return append([]string{"snp", "--ovmf", amdSevFixture(t), "--kernel", "/dev/null", "--initrd", "/dev/null",
		"--append", "console=ttyS0 loglevel=7", "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--guest-features", "0x21"},
		extra...)
}

func TestSNPOutputs(t *testing.T) {
	out, err := run(t, snpArgs(t)...)
	if err != nil || strings.TrimSpace(out) != upstreamDigest {
		t.Fatalf("hex: %q %v", out, err)
	}
	raw, _ := hex.DecodeString(upstreamDigest)
	out, err = run(t, snpArgs(t, "-o", "base64")...)
	if err != nil || strings.TrimSpace(out) != base64.StdEncoding.EncodeToString(raw) {
		t.Fatalf("base64: %q %v", out, err)
	}
	out, err = run(t, snpArgs(t, "-o", "json")...)
	var values map[string][]string
	if err != nil || json.Unmarshal([]byte(out), &values) != nil || len(values["snp_launch_measurement"]) != 1 ||
		values["snp_launch_measurement"][0] != upstreamDigest {
		t.Fatalf("json: %q %v", out, err)
	}
	if _, err := run(t, snpArgs(t, "-o", "yaml")...); err == nil {
		t.Fatal("unknown output format accepted")
	}
}

// TestSNPSeveralVCPUCounts lists one digest per vCPU count, each the
// digest sev-snp-measure states for that count.
func TestSNPSeveralVCPUCounts(t *testing.T) {
	out, err := run(t, "snp", "--ovmf", amdSevFixture(t), "--kernel", "/dev/null", "--initrd", "/dev/null",
		"--vcpus", "1,4", "--vcpu-type", "EPYC-v4", "--guest-features", "0x21", "-o", "json")
	var values map[string][]string
	if err != nil || json.Unmarshal([]byte(out), &values) != nil {
		t.Fatalf("json: %q %v", out, err)
	}
	want := []string{
		"329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198",
		"4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78eafe7b422907be0b4698e2414a631942",
	}
	if got := values["snp_launch_measurement"]; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("digests %v, want %v", got, want)
	}
}

// TestSNPMessageRegisters registers the printed message with a real RVPS
// and reads the launch measurement back as the policy looks it up.
func TestSNPMessageRegisters(t *testing.T) {
	out, err := run(t, snpArgs(t, "--message")...)
	if err != nil {
		t.Fatal(err)
	}
	svc := rvps.New(memory.New())
	ctx := context.Background()
	if _, err := svc.Register(ctx, []byte(out)); err != nil {
		t.Fatalf("register %s: %v", out, err)
	}
	v, err := svc.Query(ctx, "snp_launch_measurement")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := json.Unmarshal(v, &got); err != nil || len(got) != 1 || got[0] != upstreamDigest {
		t.Fatalf("reference value %s (%v), want [%s]", v, err, upstreamDigest)
	}
}

// TestSNPFirmwareDigest: --firmware-only prints the firmware digest that
// --ovmf-digest takes back, to the same launch digest.
func TestSNPFirmwareDigest(t *testing.T) {
	out, err := run(t, "snp", "--ovmf", amdSevFixture(t), "--firmware-only")
	const want = "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74"
	if err != nil || strings.TrimSpace(out) != want {
		t.Fatalf("firmware digest %q %v", out, err)
	}
	out, err = run(t, snpArgs(t, "--ovmf-digest", want)...)
	if err != nil || strings.TrimSpace(out) != upstreamDigest {
		t.Fatalf("seeded: %q %v", out, err)
	}
}

func TestSNPErrors(t *testing.T) {
	for name, args := range map[string][]string{
		"no vcpus":        {"snp", "--ovmf", amdSevFixture(t), "--vcpu-type", "EPYC"},
		"bad features":    snpArgs(t, "--guest-features", "lots"),
		"bad ovmf digest": snpArgs(t, "--ovmf-digest", "zz"),
		"no ovmf":         {"snp", "--vcpus", "1", "--vcpu-type", "EPYC"},
		"unknown cpu":     snpArgs(t, "--vcpu-type", "Skylake-Server"),
	} {
		if out, err := run(t, args...); err == nil {
			t.Errorf("%s: accepted, printed %q", name, out)
		}
	}
}

func TestInitData(t *testing.T) {
	doc := []byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"aa.toml\" = \"\"\"\n[token_configs.kbs]\nurl = \"http://127.0.0.1:8080\"\n\"\"\"\n")
	path := filepath.Join(t.TempDir(), "initdata.toml")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum384(doc)
	digest := hex.EncodeToString(sum[:])
	hostData := hex.EncodeToString(sum[:32])
	out, err := run(t, "initdata", path, "--algorithm", "sha384")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"init_data: " + digest, "snp_host_data: " + hostData, "tdx_mr_config_id: " + digest} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = run(t, "initdata", path, "-o", "json")
	var values map[string]any
	if err != nil || json.Unmarshal([]byte(out), &values) != nil {
		t.Fatalf("json: %q %v", out, err)
	}
	if hd, _ := values["snp_host_data"].([]any); len(hd) != 1 || hd[0] != hostData {
		t.Errorf("snp_host_data %v, want [%s]", values["snp_host_data"], hostData)
	}
	if _, err := run(t, "initdata", path, "--algorithm", "sha256"); !errors.Is(err, initdata.ErrInvalid) {
		t.Errorf("algorithm mismatch: %v", err)
	}
	if err := os.WriteFile(path, []byte("version = \"9\""), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "initdata", path); !errors.Is(err, initdata.ErrInvalid) {
		t.Errorf("bad document: %v", err)
	}
}

func TestTDX(t *testing.T) {
	const path = "/usr/share/ovmf/OVMF.fd"
	if _, err := os.Stat(path); err != nil {
		t.Skipf("SKIP: Debian's ovmf package is not installed (%v); scripts/install-deps.sh installs it", err)
	}
	out, err := run(t, "tdx", "--ovmf", path, "-o", "json")
	var values map[string][]string
	if err != nil || json.Unmarshal([]byte(out), &values) != nil || len(values["mr_td"]) != 1 || len(values["mr_td"][0]) != 96 {
		t.Fatalf("json: %q %v", out, err)
	}
	if _, err := run(t, "tdx", "--ovmf", amdSevFixture(t)); err == nil {
		t.Fatal("an SEV-only firmware cut to its tail gave an MRTD")
	}
}
