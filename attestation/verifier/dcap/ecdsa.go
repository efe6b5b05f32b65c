package dcap

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
)

// ECDSASize is the size of a raw P-256 signature r||s and of a raw public
// key x||y, as DCAP quotes and collateral carry them.
const ECDSASize = 64

// VerifyP256 checks a raw r||s ECDSA P-256 signature over SHA-256(msg), the
// only signature scheme of DCAP quotes and collateral.
func VerifyP256(key *ecdsa.PublicKey, msg, sig []byte) bool {
	if len(sig) != ECDSASize {
		return false
	}
	h := sha256.Sum256(msg)
	return ecdsa.VerifyASN1(key, h[:], RawToASN1(sig))
}

// RawToASN1 DER-encodes r||s as ECDSA-Sig-Value.
func RawToASN1(sig []byte) []byte {
	r, s := derInteger(sig[:32]), derInteger(sig[32:])
	out := make([]byte, 0, 2+len(r)+len(s))
	out = append(out, 0x30, byte(len(r)+len(s)))
	return append(append(out, r...), s...)
}

func derInteger(v []byte) []byte {
	v = bytes.TrimLeft(v, "\x00")
	out := []byte{0x02, byte(len(v))}
	if len(v) == 0 || v[0]&0x80 != 0 {
		out[1]++
		out = append(out, 0)
	}
	return append(out, v...)
}

// ParseRawP256 parses a raw x||y P-256 public key, checking it is on the curve.
func ParseRawP256(xy []byte) (*ecdsa.PublicKey, error) {
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, xy...))
}
