package sgx

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// BenchmarkVerifySGX measures Evaluate of a quote with cached chain and
// collateral: decoding, parsing, the quote and QE report signatures,
// revocation, TCB evaluation and claims. Run with -cpu 1.
func BenchmarkVerifySGX(b *testing.B) {
	p := newTestPKI(b)
	v := p.verifier(b, sgxCollateral(b), true)
	ev := evidenceJSON(p.quote(b, nil))
	ctx := context.Background()
	want := verifier.Expected{ReportData: []byte("test")}
	if _, err := v.Evaluate(ctx, ev, want); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Evaluate(ctx, ev, want); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSGXSignatureFloor does only the ECDSA P-256 verifications an
// SGX quote needs, on pre-parsed, pre-hashed inputs: quote and QE report
// signatures, PCK leaf and CA certificates, TCB signing certificate, TCB
// info and QE identity signatures, PCK and root CA CRLs. It is the floor
// BenchmarkVerifySGX is compared with.
func BenchmarkSGXSignatureFloor(b *testing.B) {
	p := newTestPKI(b)
	dir := p.Dir(b, sgxCollateral(b))
	q := mustParse(b, p.quote(b, nil))
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			b.Fatal(err)
		}
		return data
	}
	signed := func(name, member string) dcap.SignedJSON {
		s, err := dcap.SplitSigned(read(name), member)
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	crl := func(name string) *x509.RevocationList {
		c, err := dcap.ParseCRL(read(name))
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	tcb := signed("sgx-tcb-info-00606A000000.json", "tcbInfo")
	qe := signed("sgx-qe-identity.json", "enclaveIdentity")
	pckCRL, rootCRL := crl("pck-crl-platform.der"), crl("root-ca-crl.der")
	ak, err := dcap.ParseRawP256(q.AttestationKey)
	if err != nil {
		b.Fatal(err)
	}
	key := func(c *x509.Certificate) *ecdsa.PublicKey { return c.PublicKey.(*ecdsa.PublicKey) }
	hash := func(m []byte) []byte { h := sha256.Sum256(m); return h[:] }
	checks := []struct {
		name        string
		key         *ecdsa.PublicKey
		digest, sig []byte
	}{
		{"quote", ak, hash(q.SignedData), dcap.RawToASN1(q.Signature)},
		{"QE report", key(p.PCK), hash(q.RawQEReport), dcap.RawToASN1(q.QEReportSignature)},
		{"PCK certificate", key(p.CA), hash(p.PCK.RawTBSCertificate), p.PCK.Signature},
		{"PCK CA certificate", key(p.Root), hash(p.CA.RawTBSCertificate), p.CA.Signature},
		{"TCB signing certificate", key(p.Root), hash(p.TCBSigner.RawTBSCertificate), p.TCBSigner.Signature},
		{"TCB info", key(p.TCBSigner), hash(tcb.Raw), dcap.RawToASN1(tcb.Sig)},
		{"QE identity", key(p.TCBSigner), hash(qe.Raw), dcap.RawToASN1(qe.Sig)},
		{"PCK CRL", key(p.CA), hash(pckCRL.RawTBSRevocationList), pckCRL.Signature},
		{"root CA CRL", key(p.Root), hash(rootCRL.RawTBSRevocationList), rootCRL.Signature},
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range checks {
			if !ecdsa.VerifyASN1(c.key, c.digest, c.sig) {
				b.Fatalf("%s does not verify", c.name)
			}
		}
	}
}
