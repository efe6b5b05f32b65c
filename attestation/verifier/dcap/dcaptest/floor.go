package dcaptest

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// SigCheck is one ECDSA P-256 verification with its inputs prepared.
type SigCheck struct {
	Name        string
	Key         *ecdsa.PublicKey
	Digest, Sig []byte // Sig is ASN.1
}

// Verify runs the check.
func (c *SigCheck) Verify() bool { return ecdsa.VerifyASN1(c.Key, c.Digest, c.Sig) }

// FloorChecks are the signature verifications a quote signed by the test
// PKI with collateral c needs, parsed and hashed beforehand: quote and QE
// report signatures, PCK leaf and CA, TCB signing certificate, TCB info
// and QE identity, PCK and root CA CRLs. Benchmarks measure verification
// against them.
func (p *PKI) FloorChecks(t testing.TB, q *dcap.Quote, c *Collateral) []SigCheck {
	t.Helper()
	signed := func(doc map[string]any, member string) dcap.SignedJSON {
		s, err := dcap.SplitSigned(p.SignedBody(t, member, doc), member)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	crl := func(issuer *x509.Certificate, key *ecdsa.PrivateKey) *x509.RevocationList {
		l, err := x509.ParseRevocationList(p.CRL(t, issuer, key, nil, c.At))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	tcb, qe := signed(c.TCBInfo, "tcbInfo"), signed(c.QEIdentity, "enclaveIdentity")
	pckCRL, rootCRL := crl(p.CA, p.CAKey), crl(p.Root, p.RootKey)
	ak, err := dcap.ParseRawP256(q.AttestationKey)
	if err != nil {
		t.Fatal(err)
	}
	key := func(c *x509.Certificate) *ecdsa.PublicKey { return c.PublicKey.(*ecdsa.PublicKey) }
	hash := func(m []byte) []byte { h := sha256.Sum256(m); return h[:] }
	return []SigCheck{
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
}
