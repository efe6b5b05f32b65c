package tdx

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	"github.com/google/go-tdx-guest/testing/testdata"
)

// TEST-ONLY PKI. No real sample exercises revocation, every TCB status,
// TDX module identities or an event log that belongs to its quote, so these
// tests build a certificate hierarchy shaped like Intel's, sign collateral
// and quotes with it, and hand its root to the Verifier through
// Options.Roots. It is not Intel's: every certificate says so in its
// organization, and the default Verifier rejects it (TestTestPKIIsNotTrusted).
const testOrg = "Cocoon test PKI - NOT Intel"

// testTime is inside the validity of everything the test PKI issues.
var testTime = time.Date(2030, time.January, 15, 0, 0, 0, 0, time.UTC)

type testPKI struct {
	rootKey, caKey, pckKey, tcbKey, akKey *ecdsa.PrivateKey
	root, ca, pck, tcbSigner              *x509.Certificate
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func issue(t testing.TB, tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = serial(t)
	tmpl.NotBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	tmpl.NotAfter = time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
	tmpl.Subject.Organization = []string{testOrg}
	tmpl.BasicConstraintsValid = true
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// newTestPKI issues root, PCK platform CA, PCK leaf and TCB signing
// certificates. The leaf carries sgxExt, the SGX extension of a real PCK
// certificate, so it describes a real platform.
func newTestPKI(t testing.TB, sgxExt []byte) *testPKI {
	p := &testPKI{rootKey: newKey(t), caKey: newKey(t), pckKey: newKey(t), tcbKey: newKey(t), akKey: newKey(t)}
	ca := x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	p.root = issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Cocoon Test SGX Root CA"}, IsCA: true,
		KeyUsage: ca, SubjectKeyId: []byte{1}}, nil, p.rootKey, p.rootKey)
	p.ca = issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Intel SGX PCK Platform CA"}, IsCA: true,
		KeyUsage: ca, SubjectKeyId: []byte{2}}, p.root, p.caKey, p.rootKey)
	p.pck = issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Intel SGX PCK Certificate"},
		KeyUsage: x509.KeyUsageDigitalSignature, SubjectKeyId: []byte{3},
		CRLDistributionPoints: []string{"https://pccs.invalid/pckcrl"},
		ExtraExtensions:       []pkix.Extension{{Id: pcs.OidSgxExtension, Value: sgxExt}}}, p.ca, p.pckKey, p.caKey)
	p.tcbSigner = issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Intel SGX TCB Signing"},
		KeyUsage: x509.KeyUsageDigitalSignature}, p.root, p.tcbKey, p.rootKey)
	return p
}

// sgxExtensionOf returns the SGX extension of a real quote's PCK leaf.
func sgxExtensionOf(t testing.TB, quote []byte) []byte {
	chain, err := parsePCKChain(mustParse(t, quote).PCKChain)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range chain.leaf.Extensions {
		if e.Id.Equal(pcs.OidSgxExtension) {
			return e.Value
		}
	}
	t.Fatal("no SGX extension")
	return nil
}

func (p *testPKI) verifier(t testing.TB, dir string) *Verifier {
	t.Helper()
	v, err := New(Options{CollateralDir: dir, Roots: []*x509.Certificate{p.root}, Now: func() time.Time { return testTime }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func pemCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func signRaw(t testing.TB, key *ecdsa.PrivateKey, msg []byte) []byte {
	h := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
}

// quote re-signs a real quote with the test PKI after mutate edits it: new
// attestation key, QE report bound to it and signed by the test PCK key,
// test PCK chain.
func (p *testPKI) quote(t testing.TB, base []byte, mutate func(*Quote)) []byte {
	t.Helper()
	q := mustParse(t, slices.Clone(base))
	if mutate != nil {
		mutate(q)
	}
	q.PCKChain = append(pemCerts(p.pck, p.ca, p.root), 0)
	ak, err := p.akKey.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	q.AttestationKey = ak[1:]
	binding := sha256.Sum256(append(slices.Clone(q.AttestationKey), q.QEAuthData...))
	q.RawQEReport = slices.Clone(q.RawQEReport)
	copy(q.RawQEReport[320:], binding[:])
	clear(q.RawQEReport[352:])
	q.QEReportSignature = signRaw(t, p.pckKey, q.RawQEReport)
	signedLen := headerSize + int(q.BodySize)
	if q.Header.Version == 5 {
		signedLen += 6
	}
	q.Signature = signRaw(t, p.akKey, marshalQuote(q)[:signedLen])
	return marshalQuote(q)
}

// testCollateral is the collateral the test PKI signs, as JSON documents
// the tests can edit.
type testCollateral struct {
	tcbInfo     map[string]any
	qeIdentity  map[string]any
	pckRevoked  []*big.Int
	rootRevoked []*big.Int
}

// loadJSONMember decodes one member of a PCS response into a map.
func loadJSONMember(t testing.TB, body []byte, member string) map[string]any {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(env[member], &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// newTestCollateral starts from real Intel documents and moves their
// validity around testTime.
func newTestCollateral(t testing.TB, tcbInfoBody, qeIdentityBody []byte, fmspc string) *testCollateral {
	c := &testCollateral{
		tcbInfo:    loadJSONMember(t, tcbInfoBody, "tcbInfo"),
		qeIdentity: loadJSONMember(t, qeIdentityBody, "enclaveIdentity"),
	}
	c.tcbInfo["fmspc"] = fmspc
	for _, doc := range []map[string]any{c.tcbInfo, c.qeIdentity} {
		doc["issueDate"] = testTime.AddDate(0, 0, -10).Format(time.RFC3339)
		doc["nextUpdate"] = testTime.AddDate(0, 0, 20).Format(time.RFC3339)
	}
	return c
}

// sampleTestCollateral is go-tdx-guest's sample collateral, for the
// platform of sampleQuote.
func sampleTestCollateral(t testing.TB) *testCollateral {
	return newTestCollateral(t, testdata.TcbInfoBody, testdata.QeIdentityBody, sampleFMSPC)
}

func (p *testPKI) signedBody(t testing.TB, member string, doc map[string]any) []byte {
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(map[string]any{member: json.RawMessage(raw), "signature": hex.EncodeToString(signRaw(t, p.tcbKey, raw))})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func (p *testPKI) crl(t testing.TB, issuer *x509.Certificate, key *ecdsa.PrivateKey, revoked []*big.Int) []byte {
	var entries []x509.RevocationListEntry
	for _, s := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: testTime.AddDate(0, -1, 0)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(7),
		ThisUpdate:                testTime.AddDate(0, 0, -10),
		NextUpdate:                testTime.AddDate(0, 0, 20),
		RevokedCertificateEntries: entries,
	}, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// dir writes the collateral in the CollateralDir layout.
func (p *testPKI) dir(t testing.TB, c *testCollateral) string {
	dir := t.TempDir()
	chain := pemCerts(p.tcbSigner, p.root)
	fmspc := c.tcbInfo["fmspc"].(string)
	files := map[string][]byte{
		"tcb-info-" + fmspc + ".json":              p.signedBody(t, "tcbInfo", c.tcbInfo),
		"tcb-info-" + fmspc + ".json.issuer-chain": chain,
		"qe-identity.json":                         p.signedBody(t, "enclaveIdentity", c.qeIdentity),
		"qe-identity.json.issuer-chain":            chain,
		"pck-crl-platform.der":                     p.crl(t, p.ca, p.caKey, c.pckRevoked),
		"root-ca-crl.der":                          p.crl(t, p.root, p.rootKey, c.rootRevoked),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// level returns TCB level i of a collateral document.
func level(doc map[string]any, i int) map[string]any {
	return doc["tcbLevels"].([]any)[i].(map[string]any)
}

// setComponents sets the SVNs of a TCB level's "sgxtcbcomponents" or
// "tdxtcbcomponents".
func setComponents(l map[string]any, kind string, svns []byte) {
	comps := l["tcb"].(map[string]any)[kind].([]any)
	for i, svn := range svns {
		comps[i].(map[string]any)["svn"] = svn
	}
}
