package se

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Endorsements are what host-key documents are verified with: IBM's Z
// host-key signing key and its intermediate CA(s), the root CAs, and the
// CRLs of every issuer in the chain.
type Endorsements struct {
	Certs []*x509.Certificate
	CRLs  []*x509.RevocationList
	Roots *x509.CertPool
}

// IBM's signing key subject, as s390-tools recognises it: six attributes,
// the locality Poughkeepsie or Armonk, an OU ending in "Key Signing
// Service".
const ibmName = "International Business Machines Corporation"

func isIBMSigningKey(c *x509.Certificate) bool {
	s := c.Subject
	var n int
	for _, a := range s.Names {
		if len(a.Type) == 4 && a.Type[0] == 2 && a.Type[1] == 5 && a.Type[2] == 4 {
			n++
		}
	}
	one := func(v []string, want ...string) bool { return len(v) == 1 && slices.Contains(want, v[0]) }
	return n == 6 && one(s.Country, "US") && one(s.Province, "New York") &&
		one(s.Locality, "Poughkeepsie", "Armonk") && one(s.Organization, ibmName) && s.CommonName == ibmName &&
		len(s.OrganizationalUnit) == 1 && strings.HasSuffix(s.OrganizationalUnit[0], "Key Signing Service")
}

// VerifyHostKeys checks host-key documents as pvattest does: the IBM Z
// signing key chains to a root through at least one intermediate, every
// certificate of that chain and every document is on no CRL of its issuer
// (a valid, signed CRL is required for each), and each document is issued
// and signed by the signing key, valid at now and an ECDH P-521 key. It
// returns the documents' keys.
func VerifyHostKeys(hkds []*x509.Certificate, e Endorsements, now time.Time) ([]*ecdh.PublicKey, error) {
	sign, err := signingKey(e.Certs)
	if err != nil {
		return nil, err
	}
	inter := x509.NewCertPool()
	for _, c := range e.Certs {
		if c != sign {
			inter.AddCert(c)
		}
	}
	chains, err := sign.Verify(x509.VerifyOptions{Roots: e.Roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSigningKeyChain, err)
	}
	chain, err := longEnough(chains)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := checkCRL(chain[i], chain[i+1], e.CRLs, now); err != nil {
			return nil, err
		}
	}
	keys := make([]*ecdh.PublicKey, 0, len(hkds))
	for _, hkd := range hkds {
		k, err := checkHostKey(hkd, sign, e.CRLs, now)
		if err != nil {
			return nil, fmt.Errorf("host-key document %s: %w", hkd.Subject.CommonName, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func signingKey(certs []*x509.Certificate) (*x509.Certificate, error) {
	var found *x509.Certificate
	for _, c := range certs {
		if isIBMSigningKey(c) {
			if found != nil {
				return nil, fmt.Errorf("%w: more than one", ErrNoSigningKey)
			}
			found = c
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: none among the certificates", ErrNoSigningKey)
	}
	return found, nil
}

// longEnough picks a chain of signing key, intermediate(s) and root.
func longEnough(chains [][]*x509.Certificate) ([]*x509.Certificate, error) {
	for _, c := range chains {
		if len(c) >= 3 {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: no intermediate CA between the signing key and the root", ErrSigningKeyChain)
}

// checkCRL requires a CRL of issuer, signed by it and current, that does
// not list cert.
func checkCRL(cert, issuer *x509.Certificate, crls []*x509.RevocationList, now time.Time) error {
	found := false
	for _, crl := range crls {
		// IBM's signing key, a code-signing certificate, signs the host-key
		// documents' CRL: check the signature, not CheckSignatureFrom's CA
		// constraints.
		if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) ||
			issuer.CheckSignature(crl.SignatureAlgorithm, crl.RawTBSRevocationList, crl.Signature) != nil {
			continue
		}
		if now.Before(crl.ThisUpdate) || crl.NextUpdate.IsZero() || !now.Before(crl.NextUpdate) {
			continue
		}
		found = true
		for _, r := range crl.RevokedCertificateEntries {
			if r.SerialNumber.Cmp(cert.SerialNumber) == 0 {
				return fmt.Errorf("%w: %s (serial %s)", ErrRevoked, cert.Subject.CommonName, cert.SerialNumber)
			}
		}
	}
	if !found {
		return fmt.Errorf("%w: no current CRL of %s for %s", ErrCRL, issuer.Subject.CommonName, cert.Subject.CommonName)
	}
	return nil
}

func checkHostKey(hkd, sign *x509.Certificate, crls []*x509.RevocationList, now time.Time) (*ecdh.PublicKey, error) {
	if !bytes.Equal(hkd.RawIssuer, sign.RawSubject) ||
		len(hkd.AuthorityKeyId) > 0 && len(sign.SubjectKeyId) > 0 && !bytes.Equal(hkd.AuthorityKeyId, sign.SubjectKeyId) {
		return nil, ErrHostKeyIssuer
	}
	// The signing key is a code-signing certificate, not a CA: check the
	// signature itself rather than CheckSignatureFrom's CA constraints.
	if err := sign.CheckSignature(hkd.SignatureAlgorithm, hkd.RawTBSCertificate, hkd.Signature); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHostKeySignature, err)
	}
	if now.Before(hkd.NotBefore) || now.After(hkd.NotAfter) {
		return nil, fmt.Errorf("%w: valid %s to %s", ErrHostKeyExpired, hkd.NotBefore.Format(time.RFC3339), hkd.NotAfter.Format(time.RFC3339))
	}
	if err := checkCRL(hkd, sign, crls, now); err != nil {
		return nil, err
	}
	pub, ok := hkd.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P521() {
		return nil, ErrHostKeyType
	}
	return pub.ECDH()
}
