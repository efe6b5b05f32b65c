package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	vtpm "github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
)

type tamper struct {
	name   string
	edit   func(t *testing.T, ev *vtpm.Evidence)
	expect func(want *verifier.Expected)
	raw    func(b []byte) []byte
	opts   vtpm.Options
	wants  []error // nil: the evidence must still pass
}

func b64Key(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

// runTamperTable checks that s verifies and that each edit of it is
// rejected with the error of the check it defeats.
func runTamperTable(t *testing.T, s sample) {
	ev := decodeEvidence(t, s.Evidence)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	akDER, _ := base64.StdEncoding.DecodeString(ev.AKPublic)
	ak, err := x509.ParsePKIXPublicKey(akDER)
	if err != nil {
		t.Fatal(err)
	}
	setAK := func(pub crypto.PublicKey) func(*testing.T, *vtpm.Evidence) {
		return func(t *testing.T, ev *vtpm.Evidence) { ev.AKPublic = b64Key(t, pub) }
	}
	other := bytes.Repeat([]byte{0xee}, 48)
	cases := []tamper{
		{name: "untouched"},
		{name: "report data differs after byte 32 (the quote carries 32)",
			expect: func(w *verifier.Expected) { w.ReportData = append(bytes.Clone(w.ReportData[:32]), other[32:]...) }},
		{name: "wrong report data", expect: func(w *verifier.Expected) { w.ReportData = other },
			wants: []error{vtpm.ErrNonce, verifier.ErrReportDataMismatch}},
		{name: "wrong initdata", expect: func(w *verifier.Expected) { w.InitDataDigest = other },
			wants: []error{vtpm.ErrInitDataPCR, verifier.ErrInitDataMismatch}},
		{name: "flipped quote byte in nonce", edit: func(t *testing.T, ev *vtpm.Evidence) { editB64(t, &ev.TPMQuote.Message, flip(50)) },
			wants: []error{vtpm.ErrQuoteSignature, verifier.ErrSignature}},
		{name: "flipped quote byte in PCR digest", edit: func(t *testing.T, ev *vtpm.Evidence) { editB64(t, &ev.TPMQuote.Message, flip(-1)) },
			wants: []error{vtpm.ErrQuoteSignature, verifier.ErrSignature}},
		{name: "flipped signature byte", edit: func(t *testing.T, ev *vtpm.Evidence) { editB64(t, &ev.TPMQuote.Signature, flip(-1)) },
			wants: []error{vtpm.ErrQuoteSignature, verifier.ErrSignature}},
		{name: "PCR 11 edited", edit: func(t *testing.T, ev *vtpm.Evidence) { ev.TPMQuote.PCRs[11] = ev.TPMQuote.PCRs[17] },
			wants: []error{vtpm.ErrPCRDigest, verifier.ErrSignature}},
		{name: "PCR 8 forged to the initdata",
			edit: func(t *testing.T, ev *vtpm.Evidence) {
				ev.TPMQuote.PCRs[8] = hexOf(vtpm.ReplayInitData(other))
			},
			expect: func(w *verifier.Expected) { w.InitDataDigest = other },
			wants:  []error{vtpm.ErrPCRDigest}},
		{name: "AK swapped for an RSA key", edit: setAK(&rsaKey.PublicKey),
			wants: []error{vtpm.ErrQuoteSignature, verifier.ErrSignature}},
		{name: "AK swapped for an ECDSA key", edit: setAK(&ecKey.PublicKey),
			wants: []error{vtpm.ErrQuoteSignature, verifier.ErrSignature}},
		{name: "AK not enrolled", opts: vtpm.Options{TrustedAKs: []vtpm.TrustedAK{{Key: &rsaKey.PublicKey}}},
			wants: []error{vtpm.ErrUntrustedAK, verifier.ErrEndorsement}},
		{name: "AK enrolled", opts: vtpm.Options{TrustedAKs: []vtpm.TrustedAK{{Key: &rsaKey.PublicKey}, {Key: ak}}}},
		{name: "truncated JSON", raw: func(b []byte) []byte { return b[:len(b)/2] },
			wants: []error{verifier.ErrMalformedEvidence, vtpm.ErrEncoding}},
		{name: "truncated quote", edit: func(t *testing.T, ev *vtpm.Evidence) {
			editB64(t, &ev.TPMQuote.Message, func(b []byte) []byte { return b[:len(b)-1] })
		}, wants: []error{verifier.ErrMalformedEvidence, vtpm.ErrTruncated}},
		{name: "truncated signature", edit: func(t *testing.T, ev *vtpm.Evidence) {
			editB64(t, &ev.TPMQuote.Signature, func(b []byte) []byte { return b[:len(b)-1] })
		}, wants: []error{verifier.ErrMalformedEvidence, vtpm.ErrTruncated}},
		{name: "PCR 23 missing", edit: func(t *testing.T, ev *vtpm.Evidence) { ev.TPMQuote.PCRs = ev.TPMQuote.PCRs[:23] },
			wants: []error{verifier.ErrMalformedEvidence, vtpm.ErrSelection}},
		{name: "PCR not hex", edit: func(t *testing.T, ev *vtpm.Evidence) { ev.TPMQuote.PCRs[3] = "zz" },
			wants: []error{verifier.ErrMalformedEvidence, vtpm.ErrEncoding}},
		{name: "message not base64", edit: func(t *testing.T, ev *vtpm.Evidence) { ev.TPMQuote.Message = "!" },
			wants: []error{verifier.ErrMalformedEvidence, vtpm.ErrEncoding}},
		{name: "AK not a key", edit: func(t *testing.T, ev *vtpm.Evidence) { ev.AKPublic = "AAAA" },
			wants: []error{verifier.ErrMalformedEvidence, vtpm.ErrAKPublic}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := decodeEvidence(t, s.Evidence)
			if c.edit != nil {
				c.edit(t, &ev)
			}
			raw := encodeEvidence(t, ev)
			if c.raw != nil {
				raw = c.raw(raw)
			}
			want := s.expected()
			if c.expect != nil {
				c.expect(&want)
			}
			claims, err := vtpm.New(c.opts).Evaluate(context.Background(), raw, want)
			if c.wants == nil {
				if err != nil || len(claims) != 1 {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			mustFail(t, err, c.wants...)
		})
	}
}
