package tpm_test

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	vtpm "github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// fixture is Trustee's TPM evidence sample, captured from swtpm.
func fixture(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.Fixtures(t), "trustee/deps/verifier/test_data/tpm_evidence.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sample is evidence captured from swtpm by the attester, with the bindings
// it was produced for (testdata/swtpm-*.json).
type sample struct {
	ReportData     []byte          `json:"report_data"`
	InitDataDigest []byte          `json:"init_data_digest"`
	Evidence       json.RawMessage `json:"evidence"`
}

func loadSample(t testing.TB, name string) sample {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var s sample
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s sample) expected() verifier.Expected {
	return verifier.Expected{ReportData: s.ReportData, InitDataDigest: s.InitDataDigest}
}

func decodeEvidence(t testing.TB, raw []byte) vtpm.Evidence {
	t.Helper()
	var ev vtpm.Evidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

func encodeEvidence(t testing.TB, ev vtpm.Evidence) []byte {
	t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// editB64 decodes a base64 field, lets edit change the bytes, re-encodes.
func editB64(t testing.TB, field *string, edit func([]byte) []byte) {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(*field)
	if err != nil {
		t.Fatal(err)
	}
	*field = base64.StdEncoding.EncodeToString(edit(b))
}

func flip(i int) func([]byte) []byte {
	return func(b []byte) []byte {
		if i < 0 {
			i += len(b)
		}
		b[i] ^= 0x01
		return b
	}
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

// mustFail checks err wraps every one of wants.
func mustFail(t testing.TB, err error, wants ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want %v", wants)
	}
	for _, w := range wants {
		if !errors.Is(err, w) {
			t.Errorf("error %q does not wrap %q", err, w)
		}
	}
}
