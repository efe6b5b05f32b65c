package tdx

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
	tcbInfo    response // TDX TCB info of the platform's FMSPC
	qeIdentity response // TD quoting enclave identity
	pckCRL     []byte   // CRL of the PCK platform or processor CA
	rootCACRL  []byte   // CRL of the Intel SGX Root CA
}

const (
	tcbInfoID         = "TDX"
	tcbInfoVersion    = 3
	qeIdentityID      = "TD_QE"
	qeIdentityVersion = 2
	tcbSigningCN      = "Intel SGX TCB Signing"
)

// collateral is verified collateral: signatures checked against the trusted
// root, contents checked for shape. Time validity is kept as a window so a
// cached copy can be re-checked against each evaluation's clock.
type collateral struct {
	tcbInfo     pcs.TcbInfo
	qeIdentity  pcs.EnclaveIdentity
	rootCRL     *x509.RevocationList
	pckCRL      *x509.RevocationList
	rootRevoked map[string]bool // serial numbers, big-endian bytes
	pckRevoked  map[string]bool
	signers     []*x509.Certificate // TCB info and QE identity signing certificates

	notBefore, notAfter time.Time  // all items valid in between
	dates               dateWindow // reported in the claims
}

// signedJSON is a PCS JSON response: the signed member's exact bytes and
// the raw P-256 signature over them.
type signedJSON struct {
	raw []byte
	sig []byte
}

func splitSigned(body []byte, member string) (signedJSON, error) {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(body, &env); err != nil {
		return signedJSON{}, err
	}
	raw, ok := env[member]
	if !ok {
		return signedJSON{}, fmt.Errorf("no %q member", member)
	}
	var sigHex string
	if err := json.Unmarshal(env["signature"], &sigHex); err != nil {
		return signedJSON{}, fmt.Errorf("signature: %v", err)
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != ecdsaSize {
		return signedJSON{}, fmt.Errorf("signature is not %d hex-encoded bytes", ecdsaSize)
	}
	return signedJSON{raw: raw, sig: sig}, nil
}

func parseTCBInfoMember(raw []byte) (pcs.TcbInfo, error) {
	var info pcs.TcbInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		return info, fmt.Errorf("%w: TCB info: %v", ErrCollateralFormat, err)
	}
	if err := checkTCBInfoShape(&info); err != nil {
		return info, fmt.Errorf("%w: TCB info: %v", ErrCollateralFormat, err)
	}
	return info, nil
}

func checkTCBInfoShape(info *pcs.TcbInfo) error {
	if info.ID != tcbInfoID || info.Version != tcbInfoVersion {
		return fmt.Errorf("id %q version %d, want %q version %d", info.ID, info.Version, tcbInfoID, tcbInfoVersion)
	}
	if _, err := hex.DecodeString(info.Fmspc); err != nil {
		return fmt.Errorf("fmspc: %v", err)
	}
	if _, err := hex.DecodeString(info.PceID); err != nil {
		return fmt.Errorf("pceId: %v", err)
	}
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
	if len(info.TcbLevels) == 0 {
		return fmt.Errorf("no TCB levels")
	}
	for _, l := range info.TcbLevels {
		if len(l.Tcb.SgxTcbcomponents) != 16 || len(l.Tcb.TdxTcbcomponents) != 16 {
			return fmt.Errorf("TCB level without 16 SGX and 16 TDX components")
		}
	}
	return checkLevelDates(info.TcbLevels)
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

func parseQEIdentityMember(raw []byte) (pcs.EnclaveIdentity, error) {
	var id pcs.EnclaveIdentity
	if err := json.Unmarshal(raw, &id); err != nil {
		return id, fmt.Errorf("%w: QE identity: %v", ErrCollateralFormat, err)
	}
	if err := checkQEIdentityShape(&id); err != nil {
		return id, fmt.Errorf("%w: QE identity: %v", ErrCollateralFormat, err)
	}
	return id, nil
}

func checkQEIdentityShape(id *pcs.EnclaveIdentity) error {
	if id.ID != qeIdentityID || id.Version != qeIdentityVersion {
		return fmt.Errorf("id %q version %d, want %q version %d", id.ID, id.Version, qeIdentityID, qeIdentityVersion)
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

// parseCRL accepts a CRL as DER, PEM or hex-encoded DER: PCS, PCCS and
// saved files differ.
func parseCRL(b []byte) (*x509.RevocationList, error) {
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
func verifyCollateral(raw *rawCollateral, chain *pckChain, root *x509.Certificate, now time.Time) (*collateral, error) {
	c := &collateral{}
	var err error
	if c.rootCRL, err = verifyCRL(raw.rootCACRL, root, "root CA"); err != nil {
		return nil, err
	}
	if c.pckCRL, err = verifyCRL(raw.pckCRL, chain.intermediate, "PCK"); err != nil {
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
	if c.tcbInfo, err = parseTCBInfoMember(tcbRaw); err != nil {
		return nil, err
	}
	if c.qeIdentity, err = parseQEIdentityMember(qeRaw); err != nil {
		return nil, err
	}
	if err := c.matchPlatform(&chain.platform); err != nil {
		return nil, err
	}
	c.computeWindow()
	return c, c.checkTime(now)
}

// verifyCRL checks that the CRL was signed by issuer.
func verifyCRL(der []byte, issuer *x509.Certificate, name string) (*x509.RevocationList, error) {
	crl, err := parseCRL(der)
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
func (c *collateral) verifySigned(r response, member string, root *x509.Certificate, signers signerCache) (*x509.Certificate, []byte, error) {
	s, err := splitSigned(r.body, member)
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
	if !ok || !verifyP256(key, s.raw, s.sig) {
		return nil, nil, fmt.Errorf("%w: signature over %s does not verify", ErrCollateralSignature, member)
	}
	return signer, s.raw, nil
}

// signerCache remembers verified issuer chains: TCB info and QE identity
// usually come with the same one.
type signerCache map[string]*x509.Certificate

func (s signerCache) get(chain []byte, root *x509.Certificate) (*x509.Certificate, error) {
	if cert, ok := s[string(chain)]; ok {
		return cert, nil
	}
	cert, err := tcbSigner(chain, root)
	if err == nil {
		s[string(chain)] = cert
	}
	return cert, err
}

// tcbSigner finds the TCB signing certificate in an issuer chain and checks
// that the trusted root issued it.
func tcbSigner(chain []byte, root *x509.Certificate) (*x509.Certificate, error) {
	certs, err := parsePEMCerts(unescapeChain(chain))
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
func (c *collateral) matchPlatform(p *platformInfo) error {
	fmspc, _ := hex.DecodeString(c.tcbInfo.Fmspc)
	pceID, _ := hex.DecodeString(c.tcbInfo.PceID)
	if !bytes.Equal(fmspc, p.fmspc) || !bytes.Equal(pceID, p.pceID) {
		return fmt.Errorf("%w: TCB info is for FMSPC %s PCE %s, platform has %x %x",
			ErrTCBInfoMismatch, c.tcbInfo.Fmspc, c.tcbInfo.PceID, p.fmspc, p.pceID)
	}
	return nil
}

// computeWindow records when every item is valid and the dates the claims
// report.
func (c *collateral) computeWindow() {
	var w dateWindow
	w.add(c.rootCRL.ThisUpdate, c.rootCRL.NextUpdate)
	w.add(c.pckCRL.ThisUpdate, c.pckCRL.NextUpdate)
	w.add(c.tcbInfo.IssueDate, c.tcbInfo.NextUpdate)
	w.add(c.qeIdentity.IssueDate, c.qeIdentity.NextUpdate)
	for _, s := range c.signers {
		w.add(s.NotBefore, s.NotAfter)
	}
	c.notBefore, c.notAfter, c.dates = w.latestStart, w.earliestEnd, w
}

// checkTime reports the first item that is not valid at now.
func (c *collateral) checkTime(now time.Time) error {
	if !now.Before(c.notBefore) && !now.After(c.notAfter) {
		return nil
	}
	items := []struct {
		name       string
		start, end time.Time
	}{
		{"root CA CRL", c.rootCRL.ThisUpdate, c.rootCRL.NextUpdate},
		{"PCK CRL", c.pckCRL.ThisUpdate, c.pckCRL.NextUpdate},
		{"TCB info", c.tcbInfo.IssueDate, c.tcbInfo.NextUpdate},
		{"QE identity", c.qeIdentity.IssueDate, c.qeIdentity.NextUpdate},
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
