package snp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/google/go-sev-guest/abi"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// BenchmarkVerifySNP is a whole Evaluate of Trustee's e2e evidence (JSON
// parsing, chain, signature, bindings, claims) once the VCEK is known: from
// the evidence, or from an offline directory. Run with -cpu 1.
func BenchmarkVerifySNP(b *testing.B) {
	ev := trusteeEvidence(b)
	parsed, err := ParseEvidence(ev)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	r := parsed.Report
	writeFile(b, filepath.Join(dir, "vcek", hex.EncodeToString(r.kdsHWID()), "vcek.der"), parsed.Certs.VCEK)
	noChain, _ := (&Evidence{Report: r}).MarshalJSON()
	want := verifier.Expected{ReportData: r.Proto().ReportData, InitDataDigest: make([]byte, 32)}
	for _, c := range []struct {
		name string
		opts Options
		ev   []byte
	}{
		{"evidence-chain", Options{DisableKDS: true}, ev},
		{"offline-dir", Options{DisableKDS: true, CertDir: dir}, noChain},
	} {
		b.Run(c.name, func(b *testing.B) {
			v := newVerifier(b, c.opts)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Evaluate(ctx, c.ev, want); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSNPSignatureFloor is only the signature checks the chain needs,
// on inputs parsed beforehand: ARK over ASK and ASK over VCEK (RSASSA-PSS
// SHA-384, 4096 bits), VCEK over the report (ECDSA P-384 SHA-384).
func BenchmarkSNPSignatureFloor(b *testing.B) {
	ev, err := ParseEvidence(trusteeEvidence(b))
	if err != nil {
		b.Fatal(err)
	}
	rts, err := builtinRoots()
	if err != nil {
		b.Fatal(err)
	}
	ark, ask := rts[Genoa].ark, rts[Genoa].ask
	vcek, err := x509.ParseCertificate(ev.Certs.VCEK)
	if err != nil {
		b.Fatal(err)
	}
	raw := ev.Report.Bytes()
	sig, err := abi.ReportToSignatureDER(raw)
	if err != nil {
		b.Fatal(err)
	}
	signed := abi.SignedComponent(raw)
	arkKey, askKey := ark.PublicKey.(*rsa.PublicKey), ask.PublicKey.(*rsa.PublicKey)
	vcekKey := vcek.PublicKey.(*ecdsa.PublicKey)
	pss := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA384}
	b.ReportAllocs()
	for b.Loop() {
		h := sha512.Sum384(ask.RawTBSCertificate)
		if rsa.VerifyPSS(arkKey, crypto.SHA384, h[:], ask.Signature, pss) != nil {
			b.Fatal("ASK")
		}
		h = sha512.Sum384(vcek.RawTBSCertificate)
		if rsa.VerifyPSS(askKey, crypto.SHA384, h[:], vcek.Signature, pss) != nil {
			b.Fatal("VCEK")
		}
		h = sha512.Sum384(signed)
		if !ecdsa.VerifyASN1(vcekKey, h[:], sig) {
			b.Fatal("report")
		}
	}
}
