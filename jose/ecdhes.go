package jose

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"fmt"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/cocoon-cc/cocoon/protocol"
)

// ECDH-ES+A256KW with A256GCM is written here on crypto/ecdh rather than
// taken from go-jose, whose key agreement goes through crypto/elliptic's
// big.Int arithmetic and costs the KBS twice as much per released
// resource. RSA key wrapping stays with go-jose. The format is checked
// against two independent JOSE libraries in the tests.

// curveName is the JWK name of a crypto/ecdh NIST curve ("" if none).
func curveName(c ecdh.Curve) string {
	for name, curve := range ecdhCurves {
		if curve == c {
			return name
		}
	}
	return ""
}

// ecdhCurves maps JWK curve names to crypto/ecdh curves.
var ecdhCurves = map[string]ecdh.Curve{"P-256": ecdh.P256(), "P-384": ecdh.P384(), "P-521": ecdh.P521()}

type epkHeader struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

type jweHeader struct {
	Alg string     `json:"alg"`
	Enc string     `json:"enc"`
	Epk *epkHeader `json:"epk,omitempty"`
}

// sealECDHES encrypts plaintext to an EC key the caller has validated.
func sealECDHES(recipient *ecdh.PublicKey, crv string, plaintext []byte) (*protocol.Response, error) {
	eph, err := recipient.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	z, err := eph.ECDH(recipient)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	cek := make([]byte, 32)
	rand.Read(cek)
	wrapped, err := aesKeyWrap(concatKDF(z, AlgECDHES), cek)
	if err != nil {
		return nil, err
	}
	hdr, _ := jsonv2.Marshal(&jweHeader{Alg: AlgECDHES, Enc: "A256GCM", Epk: epkOf(eph.PublicKey(), crv)})
	protected := b64(hdr)
	iv := make([]byte, 12)
	rand.Read(iv)
	gcm, _ := newGCM(cek)
	sealed := gcm.Seal(nil, iv, plaintext, []byte(protected))
	n := len(sealed) - gcm.Overhead()
	return &protocol.Response{Protected: protected, EncryptedKey: b64(wrapped), IV: b64(iv),
		Ciphertext: b64(sealed[:n]), Tag: b64(sealed[n:])}, nil
}

// openECDHES decrypts a JWE whose header names ECDH-ES+A256KW.
func openECDHES(own *ecdh.PrivateKey, hdr *jweHeader, resp *protocol.Response) ([]byte, error) {
	if hdr.Enc != "A256GCM" || hdr.Epk == nil || hdr.Epk.Kty != "EC" {
		return nil, fmt.Errorf("%w: header", ErrMalformedJWE)
	}
	curve, ok := ecdhCurves[hdr.Epk.Crv]
	if !ok || curve != own.Curve() {
		return nil, fmt.Errorf("%w: epk curve %q", ErrMalformedJWE, hdr.Epk.Crv)
	}
	x, errX := base64.RawURLEncoding.DecodeString(hdr.Epk.X)
	y, errY := base64.RawURLEncoding.DecodeString(hdr.Epk.Y)
	size := (len(own.PublicKey().Bytes()) - 1) / 2
	if errX != nil || errY != nil || len(x) != size || len(y) != size {
		return nil, fmt.Errorf("%w: epk coordinates", ErrMalformedJWE)
	}
	// NewPublicKey checks the point is on the curve.
	epk, err := curve.NewPublicKey(append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, fmt.Errorf("%w: epk: %v", ErrMalformedJWE, err)
	}
	z, err := own.ECDH(epk)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecryptionFailed, err)
	}
	parts, err := decodeParts(resp)
	if err != nil {
		return nil, err
	}
	cek, err := aesKeyUnwrap(concatKDF(z, AlgECDHES), parts.key)
	if err != nil {
		return nil, err
	}
	gcm, err := newGCM(cek)
	if err != nil || len(parts.iv) != gcm.NonceSize() || len(parts.tag) != gcm.Overhead() {
		return nil, fmt.Errorf("%w: content encryption", ErrMalformedJWE)
	}
	aad := resp.Protected
	if resp.AAD != "" {
		// RFC 7516 section 5.2: the JSON serialization's aad joins the header.
		aad += "." + resp.AAD
	}
	out, err := gcm.Open(nil, parts.iv, append(parts.ct, parts.tag...), []byte(aad))
	if err != nil {
		return nil, ErrDecryptionFailed
	}
	return out, nil
}

type jweParts struct{ key, iv, ct, tag []byte }

func decodeParts(r *protocol.Response) (*jweParts, error) {
	var p jweParts
	for _, f := range []struct {
		dst *[]byte
		src string
	}{{&p.key, r.EncryptedKey}, {&p.iv, r.IV}, {&p.ct, r.Ciphertext}, {&p.tag, r.Tag}} {
		b, err := base64.RawURLEncoding.DecodeString(f.src)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformedJWE, err)
		}
		*f.dst = b
	}
	return &p, nil
}

func epkOf(pub *ecdh.PublicKey, crv string) *epkHeader {
	b := pub.Bytes() // 0x04 || X || Y
	n := (len(b) - 1) / 2
	return &epkHeader{Kty: "EC", Crv: crv, X: b64(b[1 : 1+n]), Y: b64(b[1+n:])}
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// concatKDF derives the 256-bit key-wrapping key from the shared secret
// (RFC 7518 section 4.6.2; one SHA-256 round, empty apu and apv).
func concatKDF(z []byte, alg string) []byte {
	h := sha256.New()
	var u32 [4]byte
	put := func(v uint32) {
		binary.BigEndian.PutUint32(u32[:], v)
		h.Write(u32[:])
	}
	put(1) // round counter
	h.Write(z)
	put(uint32(len(alg)))
	h.Write([]byte(alg))
	put(0)   // apu
	put(0)   // apv
	put(256) // key length in bits
	return h.Sum(nil)
}

var kwIV = []byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}

// aesKeyWrap is RFC 3394 key wrapping.
func aesKeyWrap(kek, key []byte) ([]byte, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(key) / 8
	out := make([]byte, 8+len(key))
	copy(out, kwIV)
	copy(out[8:], key)
	var b [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(b[:8], out[:8])
			copy(b[8:], out[8*i:8*i+8])
			block.Encrypt(b[:], b[:])
			binary.BigEndian.PutUint64(out[:8], binary.BigEndian.Uint64(b[:8])^uint64(n*j+i))
			copy(out[8*i:], b[8:])
		}
	}
	return out, nil
}

// aesKeyUnwrap reverses aesKeyWrap and checks the integrity value.
func aesKeyUnwrap(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped) != 40 {
		return nil, fmt.Errorf("%w: wrapped key of %d bytes", ErrMalformedJWE, len(wrapped))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(wrapped)/8 - 1
	a := binary.BigEndian.Uint64(wrapped[:8])
	r := append([]byte(nil), wrapped[8:]...)
	var b [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			binary.BigEndian.PutUint64(b[:8], a^uint64(n*j+i))
			copy(b[8:], r[8*(i-1):8*i])
			block.Decrypt(b[:], b[:])
			a = binary.BigEndian.Uint64(b[:8])
			copy(r[8*(i-1):], b[8:])
		}
	}
	var got [8]byte
	binary.BigEndian.PutUint64(got[:], a)
	if subtle.ConstantTimeCompare(got[:], kwIV) != 1 {
		return nil, errKeyUnwrap
	}
	return r, nil
}

var errKeyUnwrap = fmt.Errorf("%w: key unwrap integrity check", ErrDecryptionFailed)
