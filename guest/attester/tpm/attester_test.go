package tpm_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	vtpm "github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
	"github.com/cocoon-cc/cocoon/guest/attester/tpm"
	"github.com/cocoon-cc/cocoon/guest/attester/tpm/swtpmtest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

func open(t *testing.T, opts tpm.Options) *tpm.Attester {
	t.Helper()
	a, err := tpm.Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return a
}

// tool runs a tpm2-tools program against sim. swtpm serves one connection
// at a time, so attesters on the same TPM must be closed first.
func tool(t *testing.T, sim *swtpmtest.TPM, args ...string) string {
	t.Helper()
	swtpmtest.Require(t, args[0], "tpm2-tools")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+sim.TCTI)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

var pcrLine = regexp.MustCompile(`(?m)^\s*(\d+)\s*:\s*0x([0-9A-Fa-f]{64})$`)

// pcrread reads the SHA-256 bank with tpm2_pcrread, an implementation
// independent of the attester's.
func pcrread(t *testing.T, sim *swtpmtest.TPM) []string {
	t.Helper()
	pcrs := make([]string, 24)
	for _, m := range pcrLine.FindAllStringSubmatch(tool(t, sim, "tpm2_pcrread", "sha256"), -1) {
		i, _ := strconv.Atoi(m[1])
		pcrs[i] = strings.ToLower(m[2])
	}
	return pcrs
}

func evidence(t *testing.T, a *tpm.Attester, reportData []byte) *vtpm.Evidence {
	t.Helper()
	raw, err := a.Evidence(context.Background(), reportData)
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	var ev vtpm.Evidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	return &ev
}

// shape reduces a JSON value to its structure: keys and value kinds.
func shape(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			out[k] = shape(e)
		}
		return out
	case []any:
		if len(v) == 0 {
			return []any{}
		}
		return []any{shape(v[0]), len(v)}
	default:
		return reflect.TypeOf(v).String()
	}
}

func TestEvidenceHasTrusteeWireShape(t *testing.T) {
	sim := swtpmtest.Start(t)
	a := open(t, tpm.Options{TPM: sim.Addr})
	defer a.Close()
	raw, err := a.Evidence(context.Background(), bytes.Repeat([]byte{7}, 48))
	if err != nil {
		t.Fatal(err)
	}
	fixture, err := os.ReadFile(filepath.Join(testutil.Fixtures(t), "trustee/deps/verifier/test_data/tpm_evidence.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(fixture, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(shape(got), shape(want)) {
		t.Errorf("evidence shape %v, Trustee's fixture %v", shape(got), shape(want))
	}
}

func TestEvidenceNonceAndPCRs(t *testing.T) {
	sim := swtpmtest.Start(t)
	a := open(t, tpm.Options{TPM: sim.Addr})
	reportData := sha512.New384().Sum([]byte("runtime data"))
	ev := evidence(t, a, reportData)
	a.Close()

	msg, _ := base64.StdEncoding.DecodeString(ev.TPMQuote.Message)
	attest, err := vtpm.ParseAttest(msg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(attest.ExtraData, reportData[:32]) {
		t.Errorf("nonce %x, want the first 32 bytes of %x", attest.ExtraData, reportData)
	}
	if want := pcrread(t, sim); !reflect.DeepEqual(ev.TPMQuote.PCRs, want) {
		t.Errorf("pcrs %v, tpm2_pcrread says %v", ev.TPMQuote.PCRs, want)
	}
}

// TestCheckquoteAcceptsEvidence has tpm2-tools verify the attester's quote:
// the signature and nonce encodings are the TSS's.
func TestCheckquoteAcceptsEvidence(t *testing.T) {
	swtpmtest.Require(t, "tpm2_checkquote", "tpm2-tools")
	sim := swtpmtest.Start(t)
	a := open(t, tpm.Options{TPM: sim.Addr})
	defer a.Close()
	nonce := bytes.Repeat([]byte{0x5a}, 32)
	ev := evidence(t, a, nonce)

	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	der, _ := base64.StdEncoding.DecodeString(ev.AKPublic)
	msg, _ := base64.StdEncoding.DecodeString(ev.TPMQuote.Message)
	sig, _ := base64.StdEncoding.DecodeString(ev.TPMQuote.Signature)
	args := []string{"tpm2_checkquote",
		"-u", write("ak.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		"-m", write("msg", msg), "-s", write("sig", sig), "-g", "sha256", "-q"}
	tool(t, sim, append(args, hex.EncodeToString(nonce))...)

	bad := exec.Command(args[0], append(args[1:], strings.Repeat("00", 32))...)
	if out, err := bad.CombinedOutput(); err == nil {
		t.Errorf("tpm2_checkquote accepted a wrong nonce: %s", out)
	}
}

func TestAKIsPersistedAndReused(t *testing.T) {
	sim := swtpmtest.Start(t)
	a := open(t, tpm.Options{TPM: sim.Addr})
	first := a.AKPublic()
	a.Close()
	if _, ok := first.(*rsa.PublicKey); !ok {
		t.Fatalf("default AK is %T, want RSA as guest-components", first)
	}

	out := filepath.Join(t.TempDir(), "ak.der")
	attrs := tool(t, sim, "tpm2_readpublic", "-c", "0x81010002", "-f", "der", "-o", out)
	for _, want := range []string{"fixedtpm", "restricted", "sign"} {
		if !strings.Contains(attrs, want) {
			t.Errorf("persisted AK lacks attribute %q:\n%s", want, attrs)
		}
	}
	der, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	persisted, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	if !first.(*rsa.PublicKey).Equal(persisted) {
		t.Error("the key at 0x81010002 is not the attester's AK")
	}

	b := open(t, tpm.Options{TPM: sim.Addr, AKAlgorithm: tpm.AKECC})
	defer b.Close()
	if !first.(*rsa.PublicKey).Equal(b.AKPublic()) {
		t.Error("reopening did not reuse the persisted AK")
	}
}

func TestECCAK(t *testing.T) {
	sim := swtpmtest.Start(t)
	a := open(t, tpm.Options{TPM: sim.Addr, AKAlgorithm: tpm.AKECC, AKHandle: 0x81010010})
	defer a.Close()
	if _, ok := a.AKPublic().(*ecdsa.PublicKey); !ok {
		t.Fatalf("AK is %T, want ECDSA", a.AKPublic())
	}
	ev := evidence(t, a, []byte("n"))
	sig, _ := base64.StdEncoding.DecodeString(ev.TPMQuote.Signature)
	if s, err := vtpm.ParseSignature(sig); err != nil || s.R == nil {
		t.Errorf("signature %+v, %v: want ECDSA", s, err)
	}
}

func TestUnixSocket(t *testing.T) {
	sim := swtpmtest.StartUnix(t)
	a := open(t, tpm.Options{TPM: sim.Addr})
	defer a.Close()
	if ev := evidence(t, a, []byte("x")); len(ev.TPMQuote.PCRs) != 24 {
		t.Errorf("%d PCRs, want 24", len(ev.TPMQuote.PCRs))
	}
}

func TestExtendInitData(t *testing.T) {
	sim := swtpmtest.Start(t)
	a := open(t, tpm.Options{TPM: sim.Addr})
	digest := sha512.Sum384([]byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n"))
	if err := a.ExtendInitData(digest[:]); err != nil {
		t.Fatal(err)
	}
	if err := a.ExtendInitData(digest[:]); err != nil {
		t.Errorf("binding the same initdata again: %v", err)
	}
	other := sha512.Sum384([]byte("other"))
	if err := a.ExtendInitData(other[:]); !errors.Is(err, tpm.ErrInitDataBound) {
		t.Errorf("binding other initdata: %v, want ErrInitDataBound", err)
	}
	a.Close()
	if got, want := pcrread(t, sim)[8], hex.EncodeToString(vtpm.ReplayInitData(digest[:])); got != want {
		t.Errorf("PCR 8 = %s, want SHA-256(0^32 || digest[:32]) = %s", got, want)
	}
}

func TestRefusesKeyThatIsNotAnAK(t *testing.T) {
	sim := swtpmtest.Start(t)
	ctx := filepath.Join(t.TempDir(), "srk.ctx")
	tool(t, sim, "tpm2_createprimary", "-C", "o", "-c", ctx)
	tool(t, sim, "tpm2_evictcontrol", "-c", ctx, "0x81000001")
	_, err := tpm.Open(tpm.Options{TPM: sim.Addr, AKHandle: 0x81000001})
	if !errors.Is(err, tpm.ErrNotAK) {
		t.Errorf("Open with a storage key: %v, want ErrNotAK", err)
	}
}

func TestOpenFailures(t *testing.T) {
	if _, err := tpm.Open(tpm.Options{TPM: filepath.Join(t.TempDir(), "tpm0")}); err == nil {
		t.Error("opened a missing device")
	}
	if _, err := tpm.Open(tpm.Options{TPM: "unix://" + filepath.Join(t.TempDir(), "none.sock")}); err == nil {
		t.Error("opened a missing socket")
	}
	sim := swtpmtest.Start(t)
	if _, err := tpm.Open(tpm.Options{TPM: sim.Addr, AKAlgorithm: 9}); err == nil {
		t.Error("created an AK of an unknown algorithm")
	}
}
