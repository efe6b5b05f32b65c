// Package dcaptest builds a test-only PKI shaped like Intel's (SGX root,
// PCK platform CA, PCK leaf, TCB signing certificate) and signs DCAP
// collateral with it, for the tests of the dcap, sgx and tdx verifiers.
package dcaptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"

	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// Org marks the TEST-ONLY PKI. No real sample exercises revocation, every
// TCB status, TDX module identities or an event log that belongs to its
// quote, so tests build a certificate hierarchy shaped like Intel's, sign
// collateral and quotes with it, and hand its root to the verifier through
// Options.Roots. It is not Intel's: every certificate says so in its
// organization, and the default verifier rejects it.
const Org = "Cocoon test PKI - NOT Intel"

// Time is inside the validity of everything the test PKI issues.
var Time = time.Date(2030, time.January, 15, 0, 0, 0, 0, time.UTC)

// PKI is a test root, PCK platform CA, PCK leaf and TCB signing
// certificate with their keys, and an attestation key for quotes.
type PKI struct {
	RootKey, CAKey, PCKKey, TCBKey, AKKey *ecdsa.PrivateKey
	Root, CA, PCK, TCBSigner              *x509.Certificate
}

// NewKey generates a P-256 key.
func NewKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Serial is a random certificate serial number.
func Serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Issue signs a certificate of tmpl for key with parent's signer (self-signed
// when parent is nil), valid 2020-2040.
func Issue(t testing.TB, tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = Serial(t)
	tmpl.NotBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	tmpl.NotAfter = time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
	tmpl.Subject.Organization = []string{Org}
	tmpl.BasicConstraintsValid = true
	if parent == nil {
		parent = tmpl
	}
	return testutil.Certificate(t, tmpl, parent, &key.PublicKey, signer)
}

// New issues root, PCK platform CA, PCK leaf and TCB signing
// certificates. The leaf carries sgxExt, the SGX extension of a real PCK
// certificate, so it describes a real platform.
func New(t testing.TB, sgxExt []byte) *PKI {
	p := &PKI{RootKey: NewKey(t), CAKey: NewKey(t), PCKKey: NewKey(t), TCBKey: NewKey(t), AKKey: NewKey(t)}
	ca := x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	p.Root = Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Cocoon Test SGX Root CA"}, IsCA: true,
		KeyUsage: ca, SubjectKeyId: []byte{1}}, nil, p.RootKey, p.RootKey)
	p.CA = Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Intel SGX PCK Platform CA"}, IsCA: true,
		KeyUsage: ca, SubjectKeyId: []byte{2}}, p.Root, p.CAKey, p.RootKey)
	p.PCK = Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Intel SGX PCK Certificate"},
		KeyUsage: x509.KeyUsageDigitalSignature, SubjectKeyId: []byte{3},
		CRLDistributionPoints: []string{"https://pccs.invalid/pckcrl"},
		ExtraExtensions:       []pkix.Extension{{Id: pcs.OidSgxExtension, Value: sgxExt}}}, p.CA, p.PCKKey, p.CAKey)
	p.TCBSigner = Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Intel SGX TCB Signing"},
		KeyUsage: x509.KeyUsageDigitalSignature}, p.Root, p.TCBKey, p.RootKey)
	return p
}

// SGXExtensionOf returns the SGX extension of a real quote's PCK chain
// leaf, so a test PCK certificate describes a real platform.
func SGXExtensionOf(t testing.TB, pckChain []byte) []byte {
	chain, err := dcap.ParsePCKChain(pckChain)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range chain.Leaf.Extensions {
		if e.Id.Equal(pcs.OidSgxExtension) {
			return e.Value
		}
	}
	t.Fatal("no SGX extension")
	return nil
}

// PEMCerts encodes certificates as PEM.
func PEMCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// SignRaw signs SHA-256(msg) and returns the raw r||s signature.
func SignRaw(t testing.TB, key *ecdsa.PrivateKey, msg []byte) []byte {
	h := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
}

// Collateral is the collateral the test PKI signs, as JSON documents the
// tests can edit.
type Collateral struct {
	TEE         dcap.TEE
	TCBInfo     map[string]any
	QEIdentity  map[string]any
	PCKRevoked  []*big.Int
	RootRevoked []*big.Int
	// At is the time every item is valid around (Time unless redated).
	At time.Time
}

// LoadJSONMember decodes one member of a PCS response into a map.
func LoadJSONMember(t testing.TB, body []byte, member string) map[string]any {
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

// NewCollateral starts from real Intel documents of tee and moves their
// validity around Time.
func NewCollateral(t testing.TB, tee dcap.TEE, tcbInfoBody, qeIdentityBody []byte, fmspc string) *Collateral {
	c := &Collateral{
		TEE:        tee,
		TCBInfo:    LoadJSONMember(t, tcbInfoBody, "tcbInfo"),
		QEIdentity: LoadJSONMember(t, qeIdentityBody, "enclaveIdentity"),
	}
	c.TCBInfo["fmspc"] = fmspc
	c.Redate(Time)
	return c
}

// Redate makes every item valid from 10 days before at to 20 days after.
func (c *Collateral) Redate(at time.Time) {
	c.At = at
	for _, doc := range []map[string]any{c.TCBInfo, c.QEIdentity} {
		doc["issueDate"] = at.AddDate(0, 0, -10).Format(time.RFC3339)
		doc["nextUpdate"] = at.AddDate(0, 0, 20).Format(time.RFC3339)
	}
}

// SignedBody signs doc as a PCS response's member.
func (p *PKI) SignedBody(t testing.TB, member string, doc map[string]any) []byte {
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(map[string]any{member: json.RawMessage(raw), "signature": hex.EncodeToString(SignRaw(t, p.TCBKey, raw))})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// CRL issues a CRL of issuer revoking the serials, valid around at.
func (p *PKI) CRL(t testing.TB, issuer *x509.Certificate, key *ecdsa.PrivateKey, revoked []*big.Int, at time.Time) []byte {
	var entries []x509.RevocationListEntry
	for _, s := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: at.AddDate(0, -1, 0)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(7),
		ThisUpdate:                at.AddDate(0, 0, -10),
		NextUpdate:                at.AddDate(0, 0, 20),
		RevokedCertificateEntries: entries,
	}, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// Dir writes the collateral in dcap.Options.CollateralDir's layout.
func (p *PKI) Dir(t testing.TB, c *Collateral) string {
	dir := t.TempDir()
	chain := PEMCerts(p.TCBSigner, p.Root)
	prefix := ""
	if c.TEE == dcap.SGX {
		prefix = "sgx-"
	}
	tcbFile := prefix + "tcb-info-" + c.TCBInfo["fmspc"].(string) + ".json"
	files := map[string][]byte{
		tcbFile:                                  p.SignedBody(t, "tcbInfo", c.TCBInfo),
		tcbFile + ".issuer-chain":                chain,
		prefix + "qe-identity.json":              p.SignedBody(t, "enclaveIdentity", c.QEIdentity),
		prefix + "qe-identity.json.issuer-chain": chain,
		"pck-crl-platform.der":                   p.CRL(t, p.CA, p.CAKey, c.PCKRevoked, c.At),
		"root-ca-crl.der":                        p.CRL(t, p.Root, p.RootKey, c.RootRevoked, c.At),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Level returns TCB level i of a collateral document.
func Level(doc map[string]any, i int) map[string]any {
	return doc["tcbLevels"].([]any)[i].(map[string]any)
}

// SetComponents sets the SVNs of a TCB level's "sgxtcbcomponents" or
// "tdxtcbcomponents".
func SetComponents(l map[string]any, kind string, svns []byte) {
	comps := l["tcb"].(map[string]any)[kind].([]any)
	for i, svn := range svns {
		comps[i].(map[string]any)["svn"] = svn
	}
}

// BindAttestationKey returns the raw public attestation key and a copy of
// a QE report whose report data binds it with authData, signed by the test
// PCK key: what a quote signed by AKKey carries.
func (p *PKI) BindAttestationKey(t testing.TB, rawQEReport, authData []byte) (ak, qeReport, qeSig []byte) {
	t.Helper()
	pub, err := p.AKKey.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	ak = pub[1:]
	binding := sha256.Sum256(append(slices.Clone(ak), authData...))
	qeReport = slices.Clone(rawQEReport)
	copy(qeReport[320:], binding[:])
	clear(qeReport[352:])
	return ak, qeReport, SignRaw(t, p.PCKKey, qeReport)
}

// MarshalSignatureData serializes signature data in the layout of a quote
// of the given version, the inverse of dcap.ParseSignatureData, length
// prefix included.
func MarshalSignatureData(s *dcap.SignatureData, version uint16) []byte {
	le16, le32 := binary.LittleEndian.AppendUint16, binary.LittleEndian.AppendUint32
	qe := slices.Clone(s.RawQEReport)
	qe = append(qe, s.QEReportSignature...)
	qe = le16(qe, uint16(len(s.QEAuthData)))
	qe = append(qe, s.QEAuthData...)
	qe = le16(qe, dcap.CertPCKChain)
	qe = le32(qe, uint32(len(s.PCKChain)))
	qe = append(qe, s.PCKChain...)
	sig := append(slices.Clone(s.Signature), s.AttestationKey...)
	if version >= 4 {
		sig = le16(sig, dcap.CertQEReport)
		sig = le32(sig, uint32(len(qe)))
	}
	sig = append(sig, qe...)
	return append(le32(nil, uint32(len(sig))), sig...)
}

// SignQuote returns a quote of signedData (header and body) signed by the
// test attestation key, with base's QE report rebound to that key and the
// test PCK chain.
func (p *PKI) SignQuote(t testing.TB, signedData []byte, base *dcap.SignatureData) []byte {
	t.Helper()
	s := *base
	s.PCKChain = append(PEMCerts(p.PCK, p.CA, p.Root), 0)
	s.AttestationKey, s.RawQEReport, s.QEReportSignature = p.BindAttestationKey(t, s.RawQEReport, s.QEAuthData)
	s.Signature = SignRaw(t, p.AKKey, signedData)
	version := binary.LittleEndian.Uint16(signedData)
	return append(slices.Clone(signedData), MarshalSignatureData(&s, version)...)
}

// SGXCollateral is SGX collateral for the platform of pckChain and the
// quoting enclave of qeReport, made from Intel's TDX documents: the SGX
// TCB info has their shape without TDX components, the SGX QE identity
// names the quote's QE. Level 0 is the platform's TCB (UpToDate), level 1
// one below it (OutOfDate).
func SGXCollateral(t testing.TB, tdxTCBInfo, tdxQEIdentity, pckChain []byte, qeReport *dcap.EnclaveReport) *Collateral {
	chain, err := dcap.ParsePCKChain(pckChain)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCollateral(t, dcap.SGX, tdxTCBInfo, tdxQEIdentity, fmt.Sprintf("%X", chain.Platform.FMSPC))
	c.TCBInfo["id"] = "SGX"
	delete(c.TCBInfo, "tdxModule")
	delete(c.TCBInfo, "tdxModuleIdentities")
	for i := range c.TCBInfo["tcbLevels"].([]any) {
		l := Level(c.TCBInfo, i)
		delete(l["tcb"].(map[string]any), "tdxtcbcomponents")
		svns := slices.Clone(chain.Platform.SGXTCB[:])
		svns[0] -= byte(i)
		SetComponents(l, "sgxtcbcomponents", svns)
		l["tcb"].(map[string]any)["pcesvn"] = chain.Platform.PCESVN
	}
	Level(c.TCBInfo, 1)["tcbStatus"] = dcap.StatusOutOfDate
	c.QEIdentity["id"] = "QE"
	c.QEIdentity["mrsigner"] = hex.EncodeToString(qeReport.MrSigner[:])
	c.QEIdentity["isvprodid"] = qeReport.ISVProdID
	return c
}

// TDXCollateral is TDX collateral for the platform of pckChain made from
// Intel's documents: its two levels have the platform's SGX TCB (PCE SVN
// and one below), and the module identity of teeTCBSVN's major version has
// its SVN as the newest.
func TDXCollateral(t testing.TB, tcbInfo, qeIdentity, pckChain []byte, teeTCBSVN [16]byte) *Collateral {
	chain, err := dcap.ParsePCKChain(pckChain)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCollateral(t, dcap.TDX, tcbInfo, qeIdentity, fmt.Sprintf("%X", chain.Platform.FMSPC))
	for i := range 2 {
		l := Level(c.TCBInfo, i)
		SetComponents(l, "sgxtcbcomponents", chain.Platform.SGXTCB[:])
		l["tcb"].(map[string]any)["pcesvn"] = chain.Platform.PCESVN - uint16(i)
	}
	id := fmt.Sprintf("TDX_%02X", teeTCBSVN[1])
	for _, m := range c.TCBInfo["tdxModuleIdentities"].([]any) {
		if m := m.(map[string]any); m["id"] == id {
			Level(m, 0)["tcb"].(map[string]any)["isvsvn"] = teeTCBSVN[0]
		}
	}
	return c
}
