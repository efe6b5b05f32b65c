package dcap

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// response is one collateral item as Intel PCS or a PCCS serves it: the
// body and the issuer chain the service sends in a response header.
type response struct {
	body        []byte
	issuerChain []byte // PEM, possibly URL-encoded as in the HTTP header
}

// rawCollateral is the unverified collateral for one platform.
type rawCollateral struct {
	tcbInfo    response // TCB info of the platform's FMSPC
	qeIdentity response // identity of the quoting enclave
	pckCRL     []byte   // CRL of the PCK platform or processor CA
	rootCACRL  []byte   // CRL of the Intel SGX Root CA
}

const (
	tcbInfoVersion    = 3
	qeIdentityVersion = 2
	tcbSigningCN      = "Intel SGX TCB Signing"
)

// Collateral is verified collateral: signatures checked against the trusted
// root, contents checked for shape. Time validity is kept as a window so a
// cached copy can be re-checked against each evaluation's clock.
type Collateral struct {
	TCBInfo     pcs.TcbInfo
	QEIdentity  pcs.EnclaveIdentity
	rootCRL     *x509.RevocationList
	pckCRL      *x509.RevocationList
	rootRevoked map[string]bool // serial numbers, big-endian bytes
	pckRevoked  map[string]bool
	signers     []*x509.Certificate // TCB info and QE identity signing certificates

	notBefore, notAfter time.Time  // all items valid in between
	dates               dateWindow // reported in the claims
}

// SignedJSON is a PCS JSON response: the signed member's exact bytes and
// the raw P-256 signature over them.
type SignedJSON struct {
	Raw []byte
	Sig []byte
}

// SplitSigned splits a PCS JSON response into its signed member and the
// signature.
func SplitSigned(body []byte, member string) (SignedJSON, error) {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(body, &env); err != nil {
		return SignedJSON{}, err
	}
	raw, ok := env[member]
	if !ok {
		return SignedJSON{}, fmt.Errorf("no %q member", member)
	}
	var sigHex string
	if err := json.Unmarshal(env["signature"], &sigHex); err != nil {
		return SignedJSON{}, fmt.Errorf("signature: %v", err)
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != ECDSASize {
		return SignedJSON{}, fmt.Errorf("signature is not %d hex-encoded bytes", ECDSASize)
	}
	return SignedJSON{Raw: raw, Sig: sig}, nil
}

// ParseTCBInfo parses the signed member of a TCB info response of tee and
// checks its shape; the signature is verifyCollateral's.
func ParseTCBInfo(tee TEE, raw []byte) (pcs.TcbInfo, error) {
	var info pcs.TcbInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		return info, fmt.Errorf("%w: TCB info: %v", ErrCollateralFormat, err)
	}
	if err := checkTCBInfoShape(tee, &info); err != nil {
		return info, fmt.Errorf("%w: TCB info: %v", ErrCollateralFormat, err)
	}
	return info, nil
}

func checkTCBInfoShape(tee TEE, info *pcs.TcbInfo) error {
	if info.ID != tee.tcbInfoID() || info.Version != tcbInfoVersion {
		return fmt.Errorf("id %q version %d, want %q version %d", info.ID, info.Version, tee.tcbInfoID(), tcbInfoVersion)
	}
	if _, err := hex.DecodeString(info.Fmspc); err != nil {
		return fmt.Errorf("fmspc: %v", err)
	}
	if _, err := hex.DecodeString(info.PceID); err != nil {
		return fmt.Errorf("pceId: %v", err)
	}
	if tee == TDX {
		if err := checkTDXModules(info); err != nil {
			return err
		}
	}
	if len(info.TcbLevels) == 0 {
		return fmt.Errorf("no TCB levels")
	}
	for _, l := range info.TcbLevels {
		if len(l.Tcb.SgxTcbcomponents) != 16 || (tee == TDX && len(l.Tcb.TdxTcbcomponents) != 16) {
			return fmt.Errorf("TCB level without 16 SGX (and for TDX 16 TDX) components")
		}
	}
	return checkLevelDates(info.TcbLevels)
}

func checkTDXModules(info *pcs.TcbInfo) error {
	if err := checkModule(info.TdxModule.Mrsigner.Bytes, info.TdxModule.Attributes.Bytes, info.TdxModule.AttributesMask.Bytes); err != nil {
		return fmt.Errorf("tdxModule: %v", err)
	}
	for _, m := range info.TdxModuleIdentities {
		if err := checkModule(m.Mrsigner.Bytes, m.Attributes.Bytes, m.AttributesMask.Bytes); err != nil {
			return fmt.Errorf("tdxModuleIdentity %s: %v", m.ID, err)
		}
		if err := checkLevelDates(m.TcbLevels); err != nil {
			return err
		}
	}
	return nil
}

func checkModule(mrsigner, attributes, mask []byte) error {
	if len(mrsigner) != 48 || len(attributes) != 8 || len(mask) != 8 {
		return fmt.Errorf("mrsigner, attributes or attributesMask has the wrong size")
	}
	return nil
}

func checkLevelDates(levels []pcs.TcbLevel) error {
	for _, l := range levels {
		if _, err := time.Parse(time.RFC3339, l.TcbDate); err != nil {
			return fmt.Errorf("tcbDate: %v", err)
		}
	}
	return nil
}

// ParseQEIdentity parses the signed member of a QE identity response of
// tee and checks its shape.
func ParseQEIdentity(tee TEE, raw []byte) (pcs.EnclaveIdentity, error) {
	var id pcs.EnclaveIdentity
	if err := json.Unmarshal(raw, &id); err != nil {
		return id, fmt.Errorf("%w: QE identity: %v", ErrCollateralFormat, err)
	}
	if err := checkQEIdentityShape(tee, &id); err != nil {
		return id, fmt.Errorf("%w: QE identity: %v", ErrCollateralFormat, err)
	}
	return id, nil
}

func checkQEIdentityShape(tee TEE, id *pcs.EnclaveIdentity) error {
	if id.ID != tee.qeIdentityID() || id.Version != qeIdentityVersion {
		return fmt.Errorf("id %q version %d, want %q version %d", id.ID, id.Version, tee.qeIdentityID(), qeIdentityVersion)
	}
	if len(id.Miscselect.Bytes) != 4 || len(id.MiscselectMask.Bytes) != 4 ||
		len(id.Attributes.Bytes) != 16 || len(id.AttributesMask.Bytes) != 16 || len(id.Mrsigner.Bytes) != 32 {
		return fmt.Errorf("miscselect, attributes or mrsigner has the wrong size")
	}
	if len(id.TcbLevels) == 0 {
		return fmt.Errorf("no TCB levels")
	}
	return checkLevelDates(id.TcbLevels)
}

// ParseCRL accepts a CRL as DER, PEM or hex-encoded DER: PCS, PCCS and
// saved files differ.
func ParseCRL(b []byte) (*x509.RevocationList, error) {
	if block, _ := pem.Decode(b); block != nil {
		b = block.Bytes
	} else if h, err := hex.DecodeString(strings.TrimSpace(string(b))); err == nil {
		b = h
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return nil, fmt.Errorf("%w: CRL: %v", ErrCollateralFormat, err)
	}
	return crl, nil
}

// verifyCollateral checks raw collateral for the platform of chain against
// the trusted root at time now.
func verifyCollateral(tee TEE, raw *rawCollateral, chain *PCKChain, root *x509.Certificate, now time.Time) (*Collateral, error) {
	c := &Collateral{}
	var err error
	if c.rootCRL, err = verifyCRL(raw.rootCACRL, root, "root CA"); err != nil {
		return nil, err
	}
	if c.pckCRL, err = verifyCRL(raw.pckCRL, chain.Intermediate, "PCK"); err != nil {
		return nil, err
	}
	c.rootRevoked, c.pckRevoked = revokedSerials(c.rootCRL), revokedSerials(c.pckCRL)
	signers := signerCache{}
	tcbSigner, tcbRaw, err := c.verifySigned(raw.tcbInfo, "tcbInfo", root, signers)
	if err != nil {
		return nil, fmt.Errorf("TCB info: %w", err)
	}
	qeSigner, qeRaw, err := c.verifySigned(raw.qeIdentity, "enclaveIdentity", root, signers)
	if err != nil {
		return nil, fmt.Errorf("QE identity: %w", err)
	}
	c.signers = []*x509.Certificate{tcbSigner, qeSigner}
	if c.TCBInfo, err = ParseTCBInfo(tee, tcbRaw); err != nil {
		return nil, err
	}
	if c.QEIdentity, err = ParseQEIdentity(tee, qeRaw); err != nil {
		return nil, err
	}
	if err := c.matchPlatform(&chain.Platform); err != nil {
		return nil, err
	}
	c.computeWindow()
	return c, c.checkTime(now)
}

// verifyCRL checks that the CRL was signed by issuer.
func verifyCRL(der []byte, issuer *x509.Certificate, name string) (*x509.RevocationList, error) {
	crl, err := ParseCRL(der)
	if err != nil {
		return nil, fmt.Errorf("%s CRL: %w", name, err)
	}
	if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
		return nil, fmt.Errorf("%w: %s CRL issuer %q is not %q", ErrCollateralSignature, name, crl.Issuer.CommonName, issuer.Subject.CommonName)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("%w: %s CRL: %v", ErrCollateralSignature, name, err)
	}
	return crl, nil
}

func revokedSerials(crl *x509.RevocationList) map[string]bool {
	m := make(map[string]bool, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		m[string(e.SerialNumber.Bytes())] = true
	}
	return m
}

func isRevoked(revoked map[string]bool, cert *x509.Certificate) bool {
	return revoked[string(cert.SerialNumber.Bytes())]
}

// verifySigned checks a signed JSON response: its signing certificate must
// be Intel's TCB signing certificate issued by the trusted root and not
// revoked, and its signature must cover the member's exact bytes.
func (c *Collateral) verifySigned(r response, member string, root *x509.Certificate, signers signerCache) (*x509.Certificate, []byte, error) {
	s, err := SplitSigned(r.body, member)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrCollateralFormat, err)
	}
	signer, err := signers.get(r.issuerChain, root)
	if err != nil {
		return nil, nil, err
	}
	if isRevoked(c.rootRevoked, signer) {
		return nil, nil, fmt.Errorf("%w: signing certificate %x is revoked", ErrCollateralSignature, signer.SerialNumber)
	}
	key, ok := signer.PublicKey.(*ecdsa.PublicKey)
	if !ok || !VerifyP256(key, s.Raw, s.Sig) {
		return nil, nil, fmt.Errorf("%w: signature over %s does not verify", ErrCollateralSignature, member)
	}
	return signer, s.Raw, nil
}

// signerCache remembers verified issuer chains: TCB info and QE identity
// usually come with the same one.
type signerCache map[string]*x509.Certificate

func (s signerCache) get(chain []byte, root *x509.Certificate) (*x509.Certificate, error) {
	if cert, ok := s[string(chain)]; ok {
		return cert, nil
	}
	cert, err := TCBSigner(chain, root)
	if err == nil {
		s[string(chain)] = cert
	}
	return cert, err
}

// TCBSigner finds the TCB signing certificate in an issuer chain and checks
// that the trusted root issued it.
func TCBSigner(chain []byte, root *x509.Certificate) (*x509.Certificate, error) {
	certs, err := ParsePEMCerts(unescapeChain(chain))
	if err != nil {
		return nil, fmt.Errorf("%w: issuer chain: %v", ErrCollateralFormat, err)
	}
	for _, cert := range certs {
		if cert.Subject.CommonName != tcbSigningCN {
			continue
		}
		if err := checkIssued(cert, root); err != nil {
			return nil, fmt.Errorf("%w: TCB signing certificate: %v", ErrCollateralSignature, err)
		}
		return cert, nil
	}
	return nil, fmt.Errorf("%w: issuer chain has no %q certificate", ErrCollateralSignature, tcbSigningCN)
}

// matchPlatform checks that the TCB info was issued for the platform.
func (c *Collateral) matchPlatform(p *PlatformInfo) error {
	fmspc, _ := hex.DecodeString(c.TCBInfo.Fmspc)
	pceID, _ := hex.DecodeString(c.TCBInfo.PceID)
	if !bytes.Equal(fmspc, p.FMSPC) || !bytes.Equal(pceID, p.PCEID) {
		return fmt.Errorf("%w: TCB info is for FMSPC %s PCE %s, platform has %x %x",
			ErrTCBInfoMismatch, c.TCBInfo.Fmspc, c.TCBInfo.PceID, p.FMSPC, p.PCEID)
	}
	return nil
}

// computeWindow records when every item is valid and the dates the claims
// report.
func (c *Collateral) computeWindow() {
	var w dateWindow
	w.add(c.rootCRL.ThisUpdate, c.rootCRL.NextUpdate)
	w.add(c.pckCRL.ThisUpdate, c.pckCRL.NextUpdate)
	w.add(c.TCBInfo.IssueDate, c.TCBInfo.NextUpdate)
	w.add(c.QEIdentity.IssueDate, c.QEIdentity.NextUpdate)
	for _, s := range c.signers {
		w.add(s.NotBefore, s.NotAfter)
	}
	c.notBefore, c.notAfter, c.dates = w.latestStart, w.earliestEnd, w
}

// checkTime reports the first item that is not valid at now.
func (c *Collateral) checkTime(now time.Time) error {
	if !now.Before(c.notBefore) && !now.After(c.notAfter) {
		return nil
	}
	items := []struct {
		name       string
		start, end time.Time
	}{
		{"root CA CRL", c.rootCRL.ThisUpdate, c.rootCRL.NextUpdate},
		{"PCK CRL", c.pckCRL.ThisUpdate, c.pckCRL.NextUpdate},
		{"TCB info", c.TCBInfo.IssueDate, c.TCBInfo.NextUpdate},
		{"QE identity", c.QEIdentity.IssueDate, c.QEIdentity.NextUpdate},
		{"TCB info signing certificate", c.signers[0].NotBefore, c.signers[0].NotAfter},
		{"QE identity signing certificate", c.signers[1].NotBefore, c.signers[1].NotAfter},
	}
	for _, it := range items {
		if now.Before(it.start) || now.After(it.end) {
			return fmt.Errorf("%w: %s is valid from %s to %s, not at %s", ErrCollateralExpired, it.name,
				it.start.Format(time.RFC3339), it.end.Format(time.RFC3339), now.Format(time.RFC3339))
		}
	}
	return nil
}

// dateWindow tracks the extremes of a set of validity periods.
type dateWindow struct {
	earliestStart, latestStart, earliestEnd time.Time
}

func (w *dateWindow) add(start, end time.Time) {
	if w.earliestStart.IsZero() || start.Before(w.earliestStart) {
		w.earliestStart = start
	}
	if start.After(w.latestStart) {
		w.latestStart = start
	}
	if w.earliestEnd.IsZero() || end.Before(w.earliestEnd) {
		w.earliestEnd = end
	}
}
