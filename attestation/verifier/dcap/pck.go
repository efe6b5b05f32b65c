package dcap

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	_ "embed"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

// IntelRootCA returns Intel's SGX Root CA, the default trust anchor of PCK
// chains and collateral.
func IntelRootCA() *x509.Certificate {
	block, _ := pem.Decode(intelRootPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		panic("dcap: embedded Intel SGX Root CA: " + err.Error())
	}
	return cert
}

// PCK CA kinds, as the PCS "ca" query parameter names them.
const (
	caPlatform  = "platform"
	caProcessor = "processor"
)

var pckIssuers = map[string]string{
	"Intel SGX PCK Platform CA":  caPlatform,
	"Intel SGX PCK Processor CA": caProcessor,
}

// SGX extension fields go-tdx-guest's pcs package does not expose.
var (
	oidSGXType            = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 5}
	oidPlatformInstanceID = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 6}
	oidConfiguration      = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 7}
	oidDynamicPlatform    = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 7, 1}
	oidCachedKeys         = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 7, 2}
	oidSMTEnabled         = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 7, 3}
)

// PCKChain is the parsed PCK certificate chain of a quote with the SGX
// extensions of its leaf.
type PCKChain struct {
	Leaf, Intermediate, Root *x509.Certificate
	LeafKey                  *ecdsa.PublicKey
	CA                       string // "platform" or "processor", as PCS names them
	Platform                 PlatformInfo
}

// PlatformInfo is what the PCK certificate says about the platform.
type PlatformInfo struct {
	PPID            []byte
	FMSPC           []byte
	PCEID           []byte
	SGXTCB          [16]byte // SGX TCB component SVNs
	PCESVN          uint16
	SGXType         int
	InstanceID      []byte // platform CA certificates only
	HasConfig       bool   // platform CA certificates only
	DynamicPlatform bool
	CachedKeys      bool
	SMTEnabled      bool
}

// ParsePCKChain parses the PEM chain carried in the quote: leaf, PCK
// platform or processor CA, root CA.
func ParsePCKChain(data []byte) (*PCKChain, error) {
	certs, err := ParsePEMCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPCKChainFormat, err)
	}
	if len(certs) != 3 {
		return nil, fmt.Errorf("%w: %d certificates, want leaf, intermediate and root", ErrPCKChainFormat, len(certs))
	}
	c := &PCKChain{Leaf: certs[0], Intermediate: certs[1], Root: certs[2]}
	key, ok := c.Leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: PCK key is not ECDSA P-256", ErrPCKChainFormat)
	}
	c.LeafKey = key
	if c.CA, ok = pckIssuers[c.Intermediate.Subject.CommonName]; !ok {
		return nil, fmt.Errorf("%w: %q is not a PCK CA", ErrPCKChain, c.Intermediate.Subject.CommonName)
	}
	if !strings.Contains(c.Leaf.Subject.CommonName, "SGX PCK Certificate") {
		return nil, fmt.Errorf("%w: %q is not a PCK certificate", ErrPCKChain, c.Leaf.Subject.CommonName)
	}
	if c.Platform, err = parsePlatformInfo(c.Leaf); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPCKChainFormat, err)
	}
	// Only platform CA certificates describe a platform instance.
	hasID, hasConfig := c.Platform.InstanceID != nil, c.Platform.HasConfig
	if (c.CA == caPlatform && !(hasID && hasConfig)) || (c.CA == caProcessor && (hasID || hasConfig)) {
		return nil, fmt.Errorf("%w: %s CA certificate with platform instance %x, configuration %v",
			ErrPCKChainFormat, c.CA, c.Platform.InstanceID, c.Platform.HasConfig)
	}
	return c, nil
}

// ParsePEMCerts parses concatenated PEM certificates. The quoting library
// NUL-terminates the chain, so trailing NULs and whitespace are accepted.
func ParsePEMCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, cert)
	}
	if len(bytes.Trim(rest, "\x00 \t\r\n")) != 0 {
		return nil, fmt.Errorf("%d bytes of trailing garbage after the certificates", len(rest))
	}
	return certs, nil
}

func parsePlatformInfo(leaf *x509.Certificate) (PlatformInfo, error) {
	var p PlatformInfo
	ext, err := pcs.PckCertificateExtensions(leaf)
	if err != nil {
		return p, err
	}
	if p.PPID, err = hex.DecodeString(ext.PPID); err != nil {
		return p, err
	}
	if p.FMSPC, err = hex.DecodeString(ext.FMSPC); err != nil {
		return p, err
	}
	if p.PCEID, err = hex.DecodeString(ext.PCEID); err != nil {
		return p, err
	}
	if len(ext.TCB.CPUSvnComponents) != len(p.SGXTCB) {
		return p, fmt.Errorf("PCK certificate has %d TCB components", len(ext.TCB.CPUSvnComponents))
	}
	copy(p.SGXTCB[:], ext.TCB.CPUSvnComponents)
	p.PCESVN = ext.TCB.PCESvn
	return p, parseOptionalSGXFields(leaf, &p)
}

// sgxField is one OID-value pair of the SGX extension.
type sgxField struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

// parseOptionalSGXFields reads the SGX type and, on platform CA
// certificates, the platform instance ID and configuration flags.
func parseOptionalSGXFields(leaf *x509.Certificate, p *PlatformInfo) error {
	var fields []sgxField
	for _, e := range leaf.Extensions {
		if e.Id.Equal(pcs.OidSgxExtension) {
			if _, err := asn1.Unmarshal(e.Value, &fields); err != nil {
				return fmt.Errorf("SGX extension: %v", err)
			}
		}
	}
	for _, f := range fields {
		var err error
		switch {
		case f.ID.Equal(oidSGXType):
			var t asn1.Enumerated
			_, err = asn1.Unmarshal(f.Value.FullBytes, &t)
			p.SGXType = int(t)
		case f.ID.Equal(oidPlatformInstanceID):
			_, err = asn1.Unmarshal(f.Value.FullBytes, &p.InstanceID)
		case f.ID.Equal(oidConfiguration):
			err = parseConfiguration(f.Value.FullBytes, p)
		}
		if err != nil {
			return fmt.Errorf("SGX extension field %v: %v", f.ID, err)
		}
	}
	return nil
}

func parseConfiguration(der []byte, p *PlatformInfo) error {
	var flags []sgxField
	if _, err := asn1.Unmarshal(der, &flags); err != nil {
		return err
	}
	p.HasConfig = true
	for _, f := range flags {
		var dst *bool
		switch {
		case f.ID.Equal(oidDynamicPlatform):
			dst = &p.DynamicPlatform
		case f.ID.Equal(oidCachedKeys):
			dst = &p.CachedKeys
		case f.ID.Equal(oidSMTEnabled):
			dst = &p.SMTEnabled
		default:
			continue
		}
		if _, err := asn1.Unmarshal(f.Value.FullBytes, dst); err != nil {
			return err
		}
	}
	return nil
}

// verifySignatures checks that the chain's CA verifies to one of roots and
// the leaf to the CA. It returns the trusted root; time validity and
// revocation are checked per evaluation.
func (c *PCKChain) verifySignatures(roots []*x509.Certificate) (*x509.Certificate, error) {
	root := trustedRoot(c.Root, roots)
	if root == nil {
		return nil, fmt.Errorf("%w: root %q is not trusted", ErrPCKChain, c.Root.Subject.CommonName)
	}
	if err := checkIssued(c.Intermediate, root); err != nil {
		return nil, fmt.Errorf("%w: PCK CA: %v", ErrPCKChain, err)
	}
	if err := checkIssued(c.Leaf, c.Intermediate); err != nil {
		return nil, fmt.Errorf("%w: PCK leaf: %v", ErrPCKChain, err)
	}
	return root, nil
}

// trustedRoot returns the trusted root the chain ends in. Nothing checks
// the chain's copy of the root, so it must be byte for byte a trusted one.
func trustedRoot(cert *x509.Certificate, roots []*x509.Certificate) *x509.Certificate {
	for _, r := range roots {
		if bytes.Equal(r.Raw, cert.Raw) {
			return r
		}
	}
	return nil
}

func checkIssued(cert, issuer *x509.Certificate) error {
	if !bytes.Equal(cert.RawIssuer, issuer.RawSubject) {
		return fmt.Errorf("issuer %q does not name %q", cert.Issuer.CommonName, issuer.Subject.CommonName)
	}
	return cert.CheckSignatureFrom(issuer)
}

func checkValidity(now time.Time, certs ...*x509.Certificate) error {
	for _, c := range certs {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return fmt.Errorf("%w: %q is valid from %s to %s, not at %s", ErrCertificateValidity,
				c.Subject.CommonName, c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339), now.Format(time.RFC3339))
		}
	}
	return nil
}
