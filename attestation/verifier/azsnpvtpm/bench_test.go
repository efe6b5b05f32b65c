package azsnpvtpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/google/go-sev-guest/abi"

	"github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// BenchmarkVerifyAzSNPvTPM is a whole Evaluate of Trustee's captured
// evidence (version 2): JSON, HCL report, vTPM quote, SNP report and its
// cached VCEK chain, bindings, claims. Run with -cpu 1.
func BenchmarkVerifyAzSNPvTPM(b *testing.B) {
	v := newVerifier(b)
	ev := fixture(b, "evidence-v2.json")
	want := expectedV2(b)
	ctx := context.Background()
	testutil.Bench(b, func() error {
		_, err := v.Evaluate(ctx, ev, want)
		return err
	})
}

// BenchmarkAzSNPvTPMSignatureFloor is only the signature checks the
// evidence needs, on inputs parsed beforehand: ARK over ASK and ASK over
// VCEK (RSASSA-PSS SHA-384), VCEK over the SNP report (ECDSA P-384), the
// AK over the vTPM quote (RSASSA-PKCS1-v1_5 SHA-256).
func BenchmarkAzSNPvTPMSignatureFloor(b *testing.B) {
	ev, err := azvtpm.ParseEvidence(fixture(b, "evidence-v2.json"))
	if err != nil {
		b.Fatal(err)
	}
	// The evidence's VCEK, and the ASK and ARK of its product.
	vcek, err := x509.ParseCertificate(ev.VCEK)
	if err != nil {
		b.Fatal(err)
	}
	var chain []*x509.Certificate // another VCEK, ASK, ARK
	for rest := fixture(b, "vcek.pem"); ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			b.Fatal(err)
		}
		chain = append(chain, c)
	}
	hcl, err := azvtpm.ParseHCLReport(ev.HCLReport)
	if err != nil {
		b.Fatal(err)
	}
	ak, err := hcl.AKPub()
	if err != nil {
		b.Fatal(err)
	}
	sig, err := abi.ReportToSignatureDER(hcl.HWReport)
	if err != nil {
		b.Fatal(err)
	}
	ask, ark := chain[1], chain[2]
	report := sha512.Sum384(abi.SignedComponent(hcl.HWReport))
	quote := sha256.Sum256(ev.TPMQuote.Message)
	pss := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA384}
	b.ReportAllocs()
	for b.Loop() {
		h := sha512.Sum384(ask.RawTBSCertificate)
		if rsa.VerifyPSS(ark.PublicKey.(*rsa.PublicKey), crypto.SHA384, h[:], ask.Signature, pss) != nil {
			b.Fatal("ASK")
		}
		h = sha512.Sum384(vcek.RawTBSCertificate)
		if rsa.VerifyPSS(ask.PublicKey.(*rsa.PublicKey), crypto.SHA384, h[:], vcek.Signature, pss) != nil {
			b.Fatal("VCEK")
		}
		if !ecdsa.VerifyASN1(vcek.PublicKey.(*ecdsa.PublicKey), report[:], sig) {
			b.Fatal("report")
		}
		if rsa.VerifyPKCS1v15(ak, crypto.SHA256, quote[:], ev.TPMQuote.Signature) != nil {
			b.Fatal("quote")
		}
	}
}
