package csv

import (
	"bytes"
	"crypto/ecdsa"
	_ "embed"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"math/big"
	"slices"
	"sync"

	"github.com/emmansun/gmsm/sm2"
)

// Hygon's certificates are fixed-size little-endian structures, laid out
// as AMD's SEV (pre-SNP) certificates are, with SM2 keys and SM2-with-SM3
// signatures. Two forms exist: the CA form (832 bytes) of the Hygon Root
// Key and Hygon Signing Key, and the CSV form (2084 bytes) of the platform
// keys (CEK, PEK, ...). A signature covers the certificate's body and is
// made with the SM2 user ID of the signer's certificate.
const (
	caCertSize   = 832
	caBodySize   = 576
	csvCertSize  = 2084
	csvBodySize  = 1044
	csvSigSize   = 520 // usage, algorithm, signature, reserved
	ecPointSize  = 72  // little-endian coordinate or scalar field
	eccKeySize   = 4 + 2*ecPointSize
	sigSize      = 2 * ecPointSize
	userIDSize   = 254
	groupSM2_256 = 3
	sm2Coord     = 32 // bytes of an SM2-256 coordinate
)

// Key usages (Hygon's names) and the signature algorithm.
const (
	usageHRK  = 0x0000
	usageHSK  = 0x0013
	usageOCA  = 0x1001
	usagePEK  = 0x1002
	usageCEK  = 0x1004
	algoSM2SA = 0x0004
)

// hrkCert is Hygon's root certificate, as Trustee and Hygon's csv-rs embed
// it. Its SHA-256 is 296efa97580464aca0ab5eefe42199ee05862182508d1629f29cf4dc175b10cd.
//
//go:embed hrk.cert
var hrkCert []byte

// builtinHRK parses the embedded HRK and checks its self-signature once.
var builtinHRK = sync.OnceValues(func() (*caCert, error) {
	hrk, err := parseCACert(hrkCert)
	if err != nil {
		return nil, fmt.Errorf("built-in HRK: %w", err)
	}
	if err := checkRoot(hrk); err != nil {
		return nil, fmt.Errorf("built-in HRK: %w", err)
	}
	return hrk, nil
})

// sm2Key is a certificate's public key with the SM2 user ID its owner
// signs with.
type sm2Key struct {
	pub *ecdsa.PublicKey
	uid []byte
}

// verify checks an SM2-with-SM3 signature, r and s little-endian as
// Hygon's firmware writes them, over msg.
func (k sm2Key) verify(msg, sig []byte) bool {
	der, err := asn1.Marshal(struct{ R, S *big.Int }{le(sig[:ecPointSize]), le(sig[ecPointSize:sigSize])})
	if err != nil {
		return false
	}
	return sm2.VerifyASN1WithSM2(k.pub, k.uid, msg, der)
}

func le(b []byte) *big.Int {
	r := slices.Clone(b)
	slices.Reverse(r)
	return new(big.Int).SetBytes(r)
}

// parseKey reads an ECC public key (group, x, y) and the user ID that
// follows it in both certificate forms.
func parseKey(key []byte, uidSize uint16, uid []byte) (sm2Key, error) {
	if g := binary.LittleEndian.Uint32(key); g != groupSM2_256 {
		return sm2Key{}, fmt.Errorf("%w: ECC group %d, want SM2-256", ErrCertificate, g)
	}
	if int(uidSize) > len(uid) {
		return sm2Key{}, fmt.Errorf("%w: user ID of %d bytes", ErrCertificate, uidSize)
	}
	x, y := le(key[4:4+sm2Coord]), le(key[4+ecPointSize:4+ecPointSize+sm2Coord])
	if !sm2.P256().IsOnCurve(x, y) {
		return sm2Key{}, fmt.Errorf("%w: public key is not on the SM2 curve", ErrCertificate)
	}
	return sm2Key{pub: &ecdsa.PublicKey{Curve: sm2.P256(), X: x, Y: y}, uid: uid[:uidSize]}, nil
}

// caCert is an HRK or HSK certificate.
type caCert struct {
	raw      []byte
	kid, sid []byte // the key's id; the signer's key id
	usage    uint32
	key      sm2Key
}

func parseCACert(b []byte) (*caCert, error) {
	if len(b) != caCertSize {
		return nil, fmt.Errorf("%w: CA certificate of %d bytes, want %d", ErrCertificate, len(b), caCertSize)
	}
	c := &caCert{raw: b, kid: b[4:20], sid: b[20:36], usage: binary.LittleEndian.Uint32(b[36:])}
	var err error
	c.key, err = parseKey(b[64:64+eccKeySize], binary.LittleEndian.Uint16(b[212:]), b[214:214+userIDSize])
	return c, err
}

func (c *caCert) body() []byte { return c.raw[:caBodySize] }
func (c *caCert) sig() []byte  { return c.raw[caBodySize : caBodySize+sigSize] }

// signs reports whether c (an HRK) signed the CA certificate sub: the
// subject names c's key id as its signer and the signature verifies.
func (c *caCert) signs(sub *caCert) bool {
	return c.usage == usageHRK && bytes.Equal(sub.sid, c.kid) && c.key.verify(sub.body(), sub.sig())
}

// checkRoot checks that hrk is a self-signed HRK.
func checkRoot(hrk *caCert) error {
	if hrk.usage != usageHRK {
		return fmt.Errorf("%w: root usage %#x", ErrCertUsage, hrk.usage)
	}
	if !hrk.signs(hrk) {
		return fmt.Errorf("%w: HRK self-signature", ErrUntrustedRoot)
	}
	return nil
}

// csvCert is a platform certificate (CEK, PEK). It carries up to two
// signatures: the PEK's are the CEK's and the owner's (OCA).
type csvCert struct {
	raw   []byte
	usage uint32
	algo  uint32
	key   sm2Key
}

func parseCSVCert(b []byte) (*csvCert, error) {
	if len(b) != csvCertSize {
		return nil, fmt.Errorf("%w: CSV certificate of %d bytes, want %d", ErrCertificate, len(b), csvCertSize)
	}
	c := &csvCert{raw: b, usage: binary.LittleEndian.Uint32(b[8:]), algo: binary.LittleEndian.Uint32(b[12:])}
	var err error
	c.key, err = parseKey(b[16:16+eccKeySize], binary.LittleEndian.Uint16(b[164:]), b[166:166+userIDSize])
	return c, err
}

// signedBy reports whether one of c's signature slots is of the signer's
// usage and algorithm and verifies with its key.
func (c *csvCert) signedBy(usage, algo uint32, key sm2Key) bool {
	for i := range 2 {
		s := c.raw[csvBodySize+i*csvSigSize:]
		if binary.LittleEndian.Uint32(s) == usage && binary.LittleEndian.Uint32(s[4:]) == algo &&
			key.verify(c.raw[:csvBodySize], s[8:8+sigSize]) {
			return true
		}
	}
	return false
}

// verifyChain checks HRK → HSK → CEK → PEK, one error per link.
func verifyChain(hrk *caCert, hsk *caCert, cek, pek *csvCert) error {
	switch {
	case hsk.usage != usageHSK:
		return fmt.Errorf("%w: HSK usage %#x", ErrCertUsage, hsk.usage)
	case cek.usage != usageCEK || cek.algo != algoSM2SA:
		return fmt.Errorf("%w: CEK usage %#x algorithm %#x", ErrCertUsage, cek.usage, cek.algo)
	case pek.usage != usagePEK || pek.algo != algoSM2SA:
		return fmt.Errorf("%w: PEK usage %#x algorithm %#x", ErrCertUsage, pek.usage, pek.algo)
	case !hrk.signs(hsk):
		return ErrHSKSignature
	case !cek.signedBy(usageHSK, algoSM2SA, hsk.key):
		return ErrCEKSignature
	case !pek.signedBy(usageCEK, algoSM2SA, cek.key):
		return ErrPEKSignature
	}
	return nil
}
