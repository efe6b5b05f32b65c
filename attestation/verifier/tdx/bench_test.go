package tdx

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/json"
	"testing"
	"time"

	tdxtesting "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// BenchmarkVerifyTDX measures Evaluate with cached collateral: decoding,
// parsing, the quote and QE report signatures, revocation, TCB evaluation
// and claims. Run with -cpu 1.
func BenchmarkVerifyTDX(b *testing.B) {
	b.Run("quote", func(b *testing.B) {
		quote := sampleQuote(b)
		q := mustParse(b, quote)
		benchEvaluate(b, sampleVerifier(b), evidenceJSON(quote, nil), verifier.Expected{ReportData: q.Body.ReportData[:]})
	})
	// Nothing cached: every signature, certificate and collateral item is
	// parsed and verified, collateral read from a directory.
	b.Run("cold", func(b *testing.B) {
		ctx := context.Background()
		ev := evidenceJSON(sampleQuote(b), nil)
		dir := writeSampleDir(b)
		b.ReportAllocs()
		for b.Loop() {
			v, err := New(Options{CollateralDir: dir, Now: func() time.Time { return sampleTime }})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := v.Evaluate(ctx, ev, verifier.Expected{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A test-PKI quote with the 1 MiB td-shim CCEL a guest sends whole.
	b.Run("quote+ccel", func(b *testing.B) {
		p := newTestPKI(b, sgxExtensionOf(b, sampleQuote(b)))
		logData := trusteeData(b, "CCEL_data")
		log, err := ParseEventLog(logData)
		if err != nil {
			b.Fatal(err)
		}
		rtmrs, err := log.ReplayRTMRs()
		if err != nil {
			b.Fatal(err)
		}
		digest := sha512.Sum384([]byte("runtime data"))
		quote := p.quote(b, sampleQuote(b), func(q *Quote) {
			q.Body.RTMR = rtmrs
			q.Body.ReportData = [64]byte(verifier.Fit(digest[:], 64))
		})
		benchEvaluate(b, p.verifier(b, p.Dir(b, sampleTestCollateral(b))), evidenceJSON(quote, logData), verifier.Expected{ReportData: digest[:]})
	})
}

func benchEvaluate(b *testing.B, v *Verifier, ev json.RawMessage, want verifier.Expected) {
	ctx := context.Background()
	if _, err := v.Evaluate(ctx, ev, want); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(ev)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Evaluate(ctx, ev, want); err != nil {
			b.Fatal(err)
		}
	}
}

// sigCheck is one ECDSA verification with its inputs prepared.
type sigCheck struct {
	name   string
	key    *ecdsa.PublicKey
	digest []byte
	sig    []byte // ASN.1
}

// BenchmarkTDXSignatureFloor does only the ECDSA P-256 verifications a TDX
// quote needs, on pre-parsed, pre-hashed inputs: quote signature, QE report
// signature, PCK leaf and PCK CA certificates, TCB signing certificate, TCB
// info and QE identity signatures, PCK CRL and root CA CRL. It is the floor
// BenchmarkVerifyTDX/quote is compared with.
func BenchmarkTDXSignatureFloor(b *testing.B) {
	checks := floorChecks(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range checks {
			if !ecdsa.VerifyASN1(c.key, c.digest, c.sig) {
				b.Fatalf("%s does not verify", c.name)
			}
		}
	}
}

func floorChecks(b *testing.B) []sigCheck {
	q := mustParse(b, sampleQuote(b))
	chain, err := dcap.ParsePCKChain(q.PCKChain)
	if err != nil {
		b.Fatal(err)
	}
	root := dcap.IntelRootCA()
	ak, err := dcap.ParseRawP256(q.AttestationKey)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := dcap.TCBSigner([]byte(tdxtesting.TcbInfoHeader["Tcb-Info-Issuer-Chain"][0]), root)
	if err != nil {
		b.Fatal(err)
	}
	tcb, err := dcap.SplitSigned(testdata.TcbInfoBody, "tcbInfo")
	if err != nil {
		b.Fatal(err)
	}
	qe, err := dcap.SplitSigned(testdata.QeIdentityBody, "enclaveIdentity")
	if err != nil {
		b.Fatal(err)
	}
	pckCRL, err := dcap.ParseCRL(testdata.PckCrlBody)
	if err != nil {
		b.Fatal(err)
	}
	rootCRL, err := dcap.ParseCRL(testdata.RootCrlBody)
	if err != nil {
		b.Fatal(err)
	}
	key := func(c *x509.Certificate) *ecdsa.PublicKey { return c.PublicKey.(*ecdsa.PublicKey) }
	hash := func(m []byte) []byte { h := sha256.Sum256(m); return h[:] }
	return []sigCheck{
		{"quote", ak, hash(q.SignedData), dcap.RawToASN1(q.Signature)},
		{"QE report", chain.LeafKey, hash(q.RawQEReport), dcap.RawToASN1(q.QEReportSignature)},
		{"PCK certificate", key(chain.Intermediate), hash(chain.Leaf.RawTBSCertificate), chain.Leaf.Signature},
		{"PCK CA certificate", key(root), hash(chain.Intermediate.RawTBSCertificate), chain.Intermediate.Signature},
		{"TCB signing certificate", key(root), hash(signer.RawTBSCertificate), signer.Signature},
		{"TCB info", key(signer), hash(tcb.Raw), dcap.RawToASN1(tcb.Sig)},
		{"QE identity", key(signer), hash(qe.Raw), dcap.RawToASN1(qe.Sig)},
		{"PCK CRL", key(chain.Intermediate), hash(pckCRL.RawTBSRevocationList), pckCRL.Signature},
		{"root CA CRL", key(root), hash(rootCRL.RawTBSRevocationList), rootCRL.Signature},
	}
}
