package snp

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
)

// oidFMCSPL is Turin's FMC security patch level. go-sev-guest v0.15.0 does
// not know it and refuses Turin VCEKs, hence the parser below.
var oidFMCSPL = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 9}

// endorsement is a VCEK or VLEK with what the verifier read from it. Once
// cached it is never modified: ica records the intermediate whose signature
// over the certificate was checked.
type endorsement struct {
	cert    *x509.Certificate
	signer  abi.ReportSigner
	product Product
	ext     keyExtensions
	ica     *x509.Certificate
}

// keyExtensions are the KDS-specified extensions of a VCEK or VLEK.
type keyExtensions struct {
	productName string
	hwid        []byte // VCEK only
	tcb         TCB
	hasFMC      bool
}

// parseEndorsement parses a VCEK/VLEK and checks that it has the form AMD's
// KDS gives these certificates. It does not check signatures.
func parseEndorsement(der []byte, signer abi.ReportSigner) (*endorsement, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v: %v", ErrCertificate, signer, err)
	}
	if err := checkKeyForm(cert, signer); err != nil {
		return nil, err
	}
	product, err := issuerProduct(cert, signer)
	if err != nil {
		return nil, err
	}
	ext, err := parseKeyExtensions(cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %v: %v", ErrEndorsementKeyForm, signer, err)
	}
	if signer == abi.VcekReportSigner && len(ext.hwid) != abi.ChipIDSize {
		return nil, fmt.Errorf("%w: VCEK has no hwID extension", ErrEndorsementKeyForm)
	}
	if product == Turin && !ext.hasFMC {
		return nil, fmt.Errorf("%w: Turin %v has no FMC SPL extension", ErrEndorsementKeyForm, signer)
	}
	return &endorsement{cert: cert, signer: signer, product: product, ext: ext}, nil
}

func checkKeyForm(cert *x509.Certificate, signer abi.ReportSigner) error {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	switch {
	case cert.Version != 3:
		return fmt.Errorf("%w: %v is X.509 version %d", ErrEndorsementKeyForm, signer, cert.Version)
	case cert.SignatureAlgorithm != x509.SHA384WithRSAPSS:
		return fmt.Errorf("%w: %v signed with %v, want RSASSA-PSS SHA-384", ErrEndorsementKeyForm, signer, cert.SignatureAlgorithm)
	case !ok || pub.Curve != elliptic.P384():
		return fmt.Errorf("%w: %v key is not ECDSA P-384", ErrEndorsementKeyForm, signer)
	case cert.Subject.CommonName != "SEV-"+signer.String():
		return fmt.Errorf("%w: subject %q for a report signed by the %v", ErrEndorsementKeyForm, cert.Subject.CommonName, signer)
	}
	return nil
}

// issuerProduct reads the product from the issuer, "SEV-<product>" for a
// VCEK and "SEV-VLEK-<product>" for a VLEK.
func issuerProduct(cert *x509.Certificate, signer abi.ReportSigner) (Product, error) {
	cn := cert.Issuer.CommonName
	name, ok := strings.CutPrefix(cn, intermediateName(signer, ProductUnknown))
	for p := Milan; ok && p <= Turin; p++ {
		if name == p.String() {
			return p, nil
		}
	}
	return ProductUnknown, fmt.Errorf("%w: %v issued by %q", ErrEndorsementKeyForm, signer, cn)
}

// intermediateName is the subject of the ASK or ASVK of a product.
func intermediateName(signer abi.ReportSigner, p Product) string {
	if signer == abi.VlekReportSigner {
		return "SEV-VLEK-" + p.String()
	}
	return "SEV-" + p.String()
}

func parseKeyExtensions(cert *x509.Certificate) (keyExtensions, error) {
	var e keyExtensions
	var bl, tee, snp, ucode bool
	spls := []struct {
		oid  asn1.ObjectIdentifier
		dst  *uint8
		seen *bool
	}{
		{kds.OidBlSpl, &e.tcb.Bootloader, &bl},
		{kds.OidTeeSpl, &e.tcb.TEE, &tee},
		{kds.OidSnpSpl, &e.tcb.SNP, &snp},
		{kds.OidUcodeSpl, &e.tcb.Microcode, &ucode},
		{oidFMCSPL, &e.tcb.FMC, &e.hasFMC},
	}
	for _, x := range cert.Extensions {
		var err error
		switch {
		case x.Id.Equal(kds.OidHwid):
			e.hwid, err = extOctets(x.Value, abi.ChipIDSize)
		case x.Id.Equal(kds.OidProductName1):
			e.productName, err = extIA5(x.Value)
		}
		for _, s := range spls {
			if x.Id.Equal(s.oid) {
				if *s.seen {
					return e, fmt.Errorf("duplicate extension %v", x.Id)
				}
				*s.dst, err = extU8(x.Value)
				*s.seen = true
			}
		}
		if err != nil {
			return e, fmt.Errorf("extension %v: %v", x.Id, err)
		}
	}
	if !bl || !tee || !snp || !ucode {
		return e, fmt.Errorf("missing a TCB SPL extension")
	}
	return e, nil
}

func extU8(v []byte) (uint8, error) {
	var n int
	rest, err := asn1.Unmarshal(v, &n)
	if err != nil || len(rest) != 0 || n < 0 || n > 255 {
		return 0, fmt.Errorf("not a byte-sized INTEGER")
	}
	return uint8(n), nil
}

// extOctets reads the hwID, which older KDS certificates hold raw rather
// than as a DER OCTET STRING.
func extOctets(v []byte, size int) ([]byte, error) {
	if len(v) == size {
		return v, nil
	}
	var b []byte
	rest, err := asn1.Unmarshal(v, &b)
	if err != nil || len(rest) != 0 || len(b) != size {
		return nil, fmt.Errorf("not a %d-byte OCTET STRING", size)
	}
	return b, nil
}

func extIA5(v []byte) (string, error) {
	var s string
	if len(v) == 0 || v[0] != asn1.TagIA5String {
		return "", fmt.Errorf("not an IA5String")
	}
	rest, err := asn1.UnmarshalWithParams(v, &s, "ia5")
	if err != nil || len(rest) != 0 {
		return "", fmt.Errorf("not an IA5String")
	}
	return s, nil
}

// endorse finds the certificate of the key that signed r and verifies its
// chain to AMD's root. Verified chains are cached by the DER of the key, so
// a known VCEK costs a map lookup and the validity checks.
func (v *Verifier) endorse(r *Report, want Product, certs CertChain) (*endorsement, error) {
	der := certs.endorsementKey(r.Signer())
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: the report is signed by the %v", ErrNoEndorsementKey, r.Signer())
	}
	e, cached := v.keys.Get(string(der))
	if !cached || e.signer != r.Signer() {
		var err error
		if e, err = parseEndorsement(der, r.Signer()); err != nil {
			return nil, err
		}
	}
	if want != ProductUnknown && e.product != want {
		return nil, fmt.Errorf("%w: %v of %v, report from %v", ErrEndorsementProduct, e.signer, e.product, want)
	}
	rt := v.roots[e.product]
	if rt == nil {
		return nil, fmt.Errorf("%w: no root trusted for %v", ErrUntrustedRoot, e.product)
	}
	if len(certs.ARK) != 0 {
		if err := v.checkARK(rt, certs.ARK); err != nil {
			return nil, err
		}
	}
	ica, err := v.intermediate(rt, e.signer, certs.ASK)
	if err != nil {
		return nil, err
	}
	if e.ica != ica {
		if err := e.cert.CheckSignatureFrom(ica); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrEndorsementKeySignature, err)
		}
		verified := *e
		verified.ica = ica
		e = &verified
		v.keys.Put(string(der), e)
	}
	if err := checkValidity(v.opts.Now(), rt.ark, ica, e.cert); err != nil {
		return nil, err
	}
	return e, nil
}

// checkARK accepts a supplied ARK only if AMD's root key signed it.
func (v *Verifier) checkARK(rt *roots, der []byte) error {
	if bytes.Equal(der, rt.ark.Raw) {
		return nil
	}
	if c, ok := v.cas.Get(string(der)); ok && c.Subject.CommonName == rt.ark.Subject.CommonName {
		return nil
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("%w: ARK: %v", ErrCertificate, err)
	}
	if c.Subject.CommonName != rt.ark.Subject.CommonName || c.CheckSignatureFrom(rt.ark) != nil {
		return fmt.Errorf("%w: supplied ARK %q", ErrUntrustedRoot, c.Subject.CommonName)
	}
	v.cas.Put(string(der), c)
	return nil
}

// intermediate picks the ASK (or ASVK) to check the key against: the
// supplied one when it is the product's (and then it must be signed by the
// ARK), else the built-in one. A supplied intermediate of another kind, such
// as an ASK next to a VLEK, is ignored.
func (v *Verifier) intermediate(rt *roots, signer abi.ReportSigner, der []byte) (*x509.Certificate, error) {
	builtin := rt.ask
	if signer == abi.VlekReportSigner {
		builtin = rt.asvk
	}
	if builtin == nil {
		return nil, fmt.Errorf("%w: no ASVK trusted for %v", ErrUntrustedRoot, rt.product)
	}
	if len(der) == 0 || bytes.Equal(der, builtin.Raw) {
		return builtin, nil
	}
	name := intermediateName(signer, rt.product)
	if c, ok := v.cas.Get(string(der)); ok && c.Subject.CommonName == name {
		return c, nil
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: ASK: %v", ErrCertificate, err)
	}
	if c.Subject.CommonName != name {
		return builtin, nil
	}
	if err := c.CheckSignatureFrom(rt.ark); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrIntermediateSignature, name, err)
	}
	v.cas.Put(string(der), c)
	return c, nil
}

func checkValidity(now time.Time, certs ...*x509.Certificate) error {
	for _, c := range certs {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return fmt.Errorf("%w: %q is valid from %s to %s, verification time is %s", ErrCertExpired,
				c.Subject.CommonName, c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339), now.Format(time.RFC3339))
		}
	}
	return nil
}

// checkKeyBinding checks that the key was issued for the reported TCB and,
// for a VCEK, for this chip.
func checkKeyBinding(r *Report, e *endorsement) error {
	if e.signer == abi.VcekReportSigner && !bytes.Equal(e.ext.hwid, r.proto.ChipId) {
		return fmt.Errorf("%w: VCEK hwID %x", ErrHWIDMismatch, e.ext.hwid)
	}
	got, want := r.ReportedTCB(), e.ext.tcb
	type spl struct {
		name      string
		got, want uint8
	}
	fields := []spl{
		{"bootloader", got.Bootloader, want.Bootloader},
		{"tee", got.TEE, want.TEE},
		{"snp", got.SNP, want.SNP},
		{"microcode", got.Microcode, want.Microcode},
	}
	if r.turin() {
		fields = append(fields, spl{"fmc", got.FMC, want.FMC})
	}
	for _, f := range fields {
		if f.got != f.want {
			return fmt.Errorf("%w: %s SPL %d, %v has %d", ErrTCBMismatch, f.name, f.got, e.signer, f.want)
		}
	}
	return nil
}
