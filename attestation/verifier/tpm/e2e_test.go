package tpm_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	vtpm "github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
	"github.com/cocoon-cc/cocoon/guest/attester/tpm"
	"github.com/cocoon-cc/cocoon/guest/attester/tpm/swtpmtest"
)

var update = flag.Bool("update", false, "recapture testdata/swtpm-*.json from swtpm")

// produce runs the guest side on a fresh swtpm: bind initdata, then collect
// evidence for fresh report data.
func produce(t *testing.T, alg tpm.AKAlgorithm, initdata []byte) sample {
	t.Helper()
	sim := swtpmtest.Start(t)
	a, err := tpm.Open(tpm.Options{TPM: sim.Addr, AKAlgorithm: alg})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.ExtendInitData(initdata); err != nil {
		t.Fatal(err)
	}
	s := sample{ReportData: make([]byte, sha512.Size384), InitDataDigest: initdata}
	rand.Read(s.ReportData)
	if s.Evidence, err = a.Evidence(context.Background(), s.ReportData); err != nil {
		t.Fatal(err)
	}
	return s
}

var algs = []struct {
	name     string
	alg      tpm.AKAlgorithm
	initdata func([]byte) []byte
}{
	{"rsa", tpm.AKRSA, func(b []byte) []byte { d := sha256.Sum256(b); return d[:] }},
	{"ecc", tpm.AKECC, func(b []byte) []byte { d := sha512.Sum384(b); return d[:] }},
}

func TestEndToEnd(t *testing.T) {
	for _, a := range algs {
		t.Run(a.name, func(t *testing.T) {
			s := produce(t, a.alg, a.initdata([]byte("version = \"0.1.0\"\n")))
			tcs, err := vtpm.New(vtpm.Options{}).Evaluate(context.Background(), s.Evidence, s.expected())
			if err != nil {
				t.Fatal(err)
			}
			checkClaims(t, s, tcs)
			runTamperTable(t, s)
		})
	}
}

func checkClaims(t *testing.T, s sample, tcs []verifier.TeeClaims) {
	t.Helper()
	if len(tcs) != 1 || tcs[0].Class != "cpu" {
		t.Fatalf("claims %+v, want one of class cpu", tcs)
	}
	c, ev := tcs[0].Claims, decodeEvidence(t, s.Evidence)
	for i, v := range ev.TPMQuote.PCRs {
		if name := fmt.Sprintf("pcr%02d", i); c[name] != v {
			t.Errorf("%s = %v, want %s", name, c[name], v)
		}
	}
	want := map[string]any{
		"pcr08":       hexOf(vtpm.ReplayInitData(s.InitDataDigest)),
		"init_data":   hexOf(vtpm.ReplayInitData(s.InitDataDigest)),
		"report_data": hexOf(s.ReportData[:32]),
		"ak_public":   ev.AKPublic,
		"safe":        true,
	}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("claim %s = %v, want %v", k, c[k], v)
		}
	}
}

// TestCapturedSamples verifies evidence captured by the attester, so the
// verifier's ECDSA and SHA-384-initdata paths are covered without swtpm.
func TestCapturedSamples(t *testing.T) {
	for _, a := range algs {
		name := "swtpm-" + a.name + ".json"
		t.Run(a.name, func(t *testing.T) {
			if *update {
				s := produce(t, a.alg, a.initdata([]byte("captured")))
				b, _ := json.MarshalIndent(s, "", "  ")
				if err := os.WriteFile(filepath.Join("testdata", name), append(b, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s := loadSample(t, name)
			tcs, err := vtpm.New(vtpm.Options{}).Evaluate(context.Background(), s.Evidence, s.expected())
			if err != nil {
				t.Fatal(err)
			}
			checkClaims(t, s, tcs)
			runTamperTable(t, s)
		})
	}
}

// TestTPM2ToolsEvidence builds evidence the way Trustee's CI provisions
// swtpm (tpm2_createek, tpm2_createak, AK persisted at 0x81010002) and
// quotes with tpm2_quote: an implementation independent of the attester.
// The attester must then pick up that provisioned AK.
func TestTPM2ToolsEvidence(t *testing.T) {
	sim := swtpmtest.Start(t)
	dir := t.TempDir()
	file := func(name string) string { return filepath.Join(dir, name) }
	tool := func(args ...string) string {
		t.Helper()
		swtpmtest.Require(t, args[0], "tpm2-tools")
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+sim.TCTI)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	initdata := sha256.Sum256([]byte("initdata"))
	reportData := sha512.Sum384([]byte("runtime data"))
	tool("tpm2_createek", "-c", "0x81010001", "-G", "rsa", "-u", file("ek.pub"))
	tool("tpm2_createak", "-C", "0x81010001", "-c", file("ak.ctx"), "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u", file("ak.pem"), "-f", "pem")
	tool("tpm2_evictcontrol", "-c", file("ak.ctx"), "0x81010002")
	tool("tpm2_pcrextend", "8:sha256="+hex.EncodeToString(initdata[:]))
	tool("tpm2_quote", "-c", "0x81010002", "-l", "sha256:all", "-q", hex.EncodeToString(reportData[:32]),
		"-m", file("msg"), "-s", file("sig"), "-g", "sha256")

	read := func(name string) []byte {
		b, err := os.ReadFile(file(name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	block, _ := pem.Decode(read("ak.pem"))
	ev := vtpm.Evidence{
		AKPublic: base64.StdEncoding.EncodeToString(block.Bytes),
		TPMQuote: vtpm.Quote{
			Message:   base64.StdEncoding.EncodeToString(read("msg")),
			Signature: base64.StdEncoding.EncodeToString(read("sig")),
			PCRs:      make([]string, 24),
		},
	}
	pcrLine := regexp.MustCompile(`(?m)^\s*(\d+)\s*:\s*0x([0-9A-Fa-f]{64})$`)
	for _, m := range pcrLine.FindAllStringSubmatch(tool("tpm2_pcrread", "sha256"), -1) {
		i, _ := strconv.Atoi(m[1])
		ev.TPMQuote.PCRs[i] = strings.ToLower(m[2])
	}
	s := sample{ReportData: reportData[:], InitDataDigest: initdata[:], Evidence: encodeEvidence(t, ev)}
	tcs, err := vtpm.New(vtpm.Options{}).Evaluate(context.Background(), s.Evidence, s.expected())
	if err != nil {
		t.Fatalf("tpm2-tools evidence rejected: %v", err)
	}
	checkClaims(t, s, tcs)

	// A quote that leaves PCR 8 out cannot vouch for initdata, nor may its
	// unquoted PCRs become claims.
	tool("tpm2_quote", "-c", "0x81010002", "-l", "sha256:0,1,2,3,4,5,6,7,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23",
		"-q", hex.EncodeToString(reportData[:32]), "-m", file("msg"), "-s", file("sig"), "-g", "sha256")
	ev.TPMQuote.Message = base64.StdEncoding.EncodeToString(read("msg"))
	ev.TPMQuote.Signature = base64.StdEncoding.EncodeToString(read("sig"))
	partial := encodeEvidence(t, ev)
	tcs, err = vtpm.New(vtpm.Options{}).Evaluate(context.Background(), partial, verifier.Expected{ReportData: reportData[:]})
	if err != nil {
		t.Fatalf("quote without PCR 8: %v", err)
	}
	if c := tcs[0].Claims; c["pcr08"] != nil || c["init_data"] != nil || c["pcr09"] != ev.TPMQuote.PCRs[9] {
		t.Errorf("claims of a quote without PCR 8: pcr08 %v init_data %v pcr09 %v", c["pcr08"], c["init_data"], c["pcr09"])
	}
	_, err = vtpm.New(vtpm.Options{}).Evaluate(context.Background(), partial, s.expected())
	mustFail(t, err, vtpm.ErrInitDataPCR, verifier.ErrInitDataMismatch)

	toolsAK, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	a, err := tpm.Open(tpm.Options{TPM: sim.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if !reflect.DeepEqual(a.AKPublic(), toolsAK) {
		t.Fatal("the attester did not use the AK provisioned at 0x81010002")
	}
	raw, err := a.Evidence(context.Background(), reportData[:])
	if err != nil {
		t.Fatal(err)
	}
	opts := vtpm.Options{TrustedAKs: []vtpm.TrustedAK{{Key: toolsAK}}}
	if _, err := vtpm.New(opts).Evaluate(context.Background(), raw, s.expected()); err != nil {
		t.Errorf("attester evidence with the provisioned AK rejected: %v", err)
	}
}
