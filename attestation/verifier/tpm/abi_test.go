package tpm_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"slices"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	vtpm "github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
)

// Offsets in a TPMS_ATTEST quote with a SHA-256 qualified signer and a
// 64-byte nonce, like the Trustee fixture's.
const (
	offType      = 4
	offSafe      = 4 + 2 + 36 + 66 + 16
	offSelection = offSafe + 1 + 8
	offBankHash  = offSelection + 4
	offBitmap    = offBankHash + 3
)

func fixtureParts(t *testing.T) (msg, sig []byte, pcrs []string) {
	t.Helper()
	ev := decodeEvidence(t, fixture(t))
	msg, _ = base64.StdEncoding.DecodeString(ev.TPMQuote.Message)
	sig, _ = base64.StdEncoding.DecodeString(ev.TPMQuote.Signature)
	return msg, sig, ev.TPMQuote.PCRs
}

func TestParseAttestFixture(t *testing.T) {
	msg, _, pcrs := fixtureParts(t)
	a, err := vtpm.ParseAttest(msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.ExtraData) != 64 || len(a.QualifiedSigner) != 34 || !a.Safe {
		t.Errorf("nonce %d bytes, signer %d bytes, safe %v", len(a.ExtraData), len(a.QualifiedSigner), a.Safe)
	}
	if len(a.Selection) != 1 || a.Selection[0].Hash != crypto.SHA256 || !slices.Equal(a.Selection[0].PCRs, seq(24)) {
		t.Errorf("selection %+v, want SHA-256 PCRs 0..23", a.Selection)
	}
	h := sha256.New()
	for _, p := range pcrs {
		b, _ := hex.DecodeString(p)
		h.Write(b)
	}
	if !bytes.Equal(a.PCRDigest, h.Sum(nil)) {
		t.Errorf("PCR digest %x is not SHA-256 over the reported PCRs", a.PCRDigest)
	}
	if a.FirmwareVersion != 0x2019102300163636 {
		t.Errorf("firmware version %#x, want swtpm's", a.FirmwareVersion)
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func TestParseAttestRejectsEveryTruncation(t *testing.T) {
	msg, _, _ := fixtureParts(t)
	for n := range len(msg) {
		if _, err := vtpm.ParseAttest(msg[:n]); !errors.Is(err, vtpm.ErrTruncated) {
			t.Fatalf("%d of %d bytes: %v, want ErrTruncated", n, len(msg), err)
		}
	}
}

func TestParseAttestRejects(t *testing.T) {
	msg, _, _ := fixtureParts(t)
	edit := func(off int, b ...byte) []byte {
		m := bytes.Clone(msg)
		copy(m[off:], b)
		return m
	}
	for _, c := range []struct {
		name string
		msg  []byte
		want error
	}{
		{"trailing byte", append(bytes.Clone(msg), 0), vtpm.ErrTrailingBytes},
		{"magic", edit(0, 0xfe), vtpm.ErrNotTPMGenerated},
		{"certify, not quote", edit(offType, 0x80, 0x17), vtpm.ErrNotQuote},
		{"safe is 2", edit(offSafe, 2), vtpm.ErrBadField},
		{"17 banks", edit(offSelection, 0, 0, 0, 17), vtpm.ErrBadField},
		{"SHA-1 bank", edit(offBankHash, 0x00, 0x04), vtpm.ErrUnsupportedAlg},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := vtpm.ParseAttest(c.msg); !errors.Is(err, c.want) {
				t.Errorf("%v, want %v", err, c.want)
			}
		})
	}
}

// TestSelectionMustCoverReportedSHA256 edits the selection of the fixture:
// the evidence can only vouch for SHA-256 PCRs it carries.
func TestSelectionMustCoverReportedSHA256(t *testing.T) {
	for _, c := range []struct {
		name string
		off  int
		b    []byte
	}{
		{"SHA-384 bank", offBankHash, []byte{0x00, 0x0c}},
		{"no PCR", offBitmap, []byte{0, 0, 0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev := decodeEvidence(t, fixture(t))
			editB64(t, &ev.TPMQuote.Message, func(m []byte) []byte { copy(m[c.off:], c.b); return m })
			_, err := vtpm.ParseEvidence(encodeEvidence(t, ev))
			mustFail(t, err, verifier.ErrMalformedEvidence, vtpm.ErrSelection)
		})
	}
}

func TestParseSignature(t *testing.T) {
	_, sig, _ := fixtureParts(t)
	s, err := vtpm.ParseSignature(sig)
	if err != nil {
		t.Fatal(err)
	}
	if s.Hash != crypto.SHA256 || len(s.RSA) != 256 || s.R != nil {
		t.Errorf("signature %+v, want RSASSA-SHA256 over 2048 bits", s)
	}
	ecc := decodeEvidence(t, loadSample(t, "swtpm-ecc.json").Evidence)
	eccSig, _ := base64.StdEncoding.DecodeString(ecc.TPMQuote.Signature)
	if s, err := vtpm.ParseSignature(eccSig); err != nil || s.R == nil || s.S == nil || s.RSA != nil {
		t.Errorf("ECDSA signature %+v, %v", s, err)
	}
	for n := range len(sig) {
		if _, err := vtpm.ParseSignature(sig[:n]); err == nil {
			t.Fatalf("accepted %d of %d bytes", n, len(sig))
		}
	}
	for _, c := range []struct {
		name string
		sig  []byte
		want error
	}{
		{"trailing byte", append(bytes.Clone(sig), 0), vtpm.ErrTrailingBytes},
		{"RSAPSS", append([]byte{0x00, 0x16}, sig[2:]...), vtpm.ErrUnsupportedAlg},
		{"SHA-1", append([]byte{0x00, 0x14, 0x00, 0x04}, sig[4:]...), vtpm.ErrUnsupportedAlg},
	} {
		if _, err := vtpm.ParseSignature(c.sig); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
