package nvidia

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"time"
)

// DeviceRootSHA256 pins NVIDIA's device identity root ("NVIDIA Device
// Identity CA"), the self-signed certificate that ends every GPU's chain:
// the chain carries it, the verifier checks it is that certificate.
const DeviceRootSHA256 = "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"

// oidFWID is the TCG DICE extension NVIDIA's attestation key certificates
// carry the firmware id (FWID) in.
var (
	oidFWID   = asn1.ObjectIdentifier{2, 23, 133, 5, 4, 1}
	oidSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
)

// maxChainSize bounds the PEM chain; real ones are about 5 KiB.
const maxChainSize = 64 << 10

// ParseChain reads a PEM chain, the attestation key's certificate first
// and the root last.
func ParseChain(b []byte) ([]*x509.Certificate, error) {
	if len(b) > maxChainSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrCertificate, len(b))
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: PEM block %q", ErrCertificate, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCertificate, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(b)) != 0 || len(certs) == 0 {
		return nil, fmt.Errorf("%w: not a PEM certificate chain", ErrCertificate)
	}
	return certs, nil
}

// chain is what a verified chain vouches for: the attestation key, the
// firmware it names (or why none) and when every certificate is valid.
type chain struct {
	certs               []*x509.Certificate
	key                 *ecdsa.PublicKey
	fwid                string
	fwidErr             error
	notBefore, notAfter time.Time
}

// verifyChain checks that the chain ends in a trusted root and that every
// certificate is signed by the next; the caller checks the validity period
// and the FWID against the report.
func verifyChain(certs []*x509.Certificate, roots map[[32]byte]bool) (*chain, error) {
	if len(certs) < 2 {
		return nil, ErrChainLength
	}
	root := certs[len(certs)-1]
	if !roots[sha256.Sum256(root.Raw)] {
		return nil, fmt.Errorf("%w: %s", ErrUntrustedRoot, root.Subject)
	}
	key, ok := certs[0].PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: attestation key is not ECDSA", ErrSignature)
	}
	ch := &chain{certs: certs, key: key, notBefore: root.NotBefore, notAfter: root.NotAfter}
	for i, c := range certs {
		ch.notBefore, ch.notAfter = latest(ch.notBefore, c.NotBefore), earliest(ch.notAfter, c.NotAfter)
		parent := certs[min(i+1, len(certs)-1)]
		// This also refuses a parent that is not a CA.
		if err := c.CheckSignatureFrom(parent); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrChain, c.Subject, err)
		}
	}
	ch.fwid, ch.fwidErr = certFWID(certs[0])
	return ch, nil
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// check refuses a chain not valid at now or whose key is not for fwid.
func (ch *chain) check(now time.Time, fwid string) error {
	if now.Before(ch.notBefore) || now.After(ch.notAfter) {
		return fmt.Errorf("%w: a certificate is not valid at %s (chain valid %s to %s)", ErrChain,
			now.Format(time.RFC3339), ch.notBefore.Format(time.RFC3339), ch.notAfter.Format(time.RFC3339))
	}
	if ch.fwidErr != nil {
		return ch.fwidErr
	}
	if ch.fwid != fwid {
		return fmt.Errorf("%w: certificate %s, report %s", ErrFWID, ch.fwid, fwid)
	}
	return nil
}

// certFWID reads the SHA-384 FWID of the attestation key's certificate:
// SEQUENCE { INTEGER, SubjectPublicKeyInfo, SEQUENCE { OID, OCTET STRING } }.
func certFWID(c *x509.Certificate) (string, error) {
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidFWID) {
			continue
		}
		var ext struct {
			Version int
			Key     asn1.RawValue
			FWID    struct {
				Alg    asn1.ObjectIdentifier
				Digest []byte
			}
		}
		rest, err := asn1.Unmarshal(e.Value, &ext)
		if err != nil || len(rest) != 0 || !ext.FWID.Alg.Equal(oidSHA384) || len(ext.FWID.Digest) != 48 {
			return "", fmt.Errorf("%w: malformed FWID extension", ErrFWID)
		}
		return hex.EncodeToString(ext.FWID.Digest), nil
	}
	return "", fmt.Errorf("%w: the attestation key certificate has none", ErrFWID)
}
