package main

import (
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
	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf/ovmftest"
	"github.com/cocoon-cc/cocoon/rvps"
	"github.com/cocoon-cc/cocoon/store/memory"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return testutil.Execute(newRoot(), args...)
}

// amdSevFixture writes a synthetic AmdSev-shaped firmware to a file.
func amdSevFixture(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "OVMF.fd")
	if err := os.WriteFile(path, ovmftest.AmdSev(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The digest of the sev-snp-measure README's invocation with that firmware
// (runtime/measure/snp's TestLaunchDigestVectors "default").
const upstreamDigest = "344ba3fb5c012d3b7c222fbd4e8d1105b4092fbaff80b2ba36e85373479fb8595cb04b76208b8d761b1f68dbba378e0b"

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
// digest runtime/measure/snp's vectors state for that count.
func TestSNPSeveralVCPUCounts(t *testing.T) {
	out, err := run(t, "snp", "--ovmf", amdSevFixture(t), "--kernel", "/dev/null", "--initrd", "/dev/null",
		"--vcpus", "1,4", "--vcpu-type", "EPYC-v4", "--guest-features", "0x21", "-o", "json")
	var values map[string][]string
	if err != nil || json.Unmarshal([]byte(out), &values) != nil {
		t.Fatalf("json: %q %v", out, err)
	}
	want := []string{
		"27585097c29ff137a470b9275b45b5dc97bde17f706b7801e7bc2f7cf231103794d46c9f4ce1cf11ab0b621b1b6428bd",
		"d640665453d8caa13932d64f132bc42fe1bc468c5c116b83450425e83f9163539dbe114ad64012387f7da9f26e808f9d",
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
	const want = "acad33bcce92b11f11364be2a04448acd0cb3dd3e76d5338f44817c50201ad939b2c2160baf3c746a5873a64bf234dce"
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
