// Package jose converts between the KBS protocol's JOSE objects and Go keys:
// the guest's ephemeral TEE key (a JWK in the attestation's runtime data) and
// the flattened JWE that carries a released resource.
//
// The cryptography is go-jose's; this package pins the algorithms the
// protocol allows: A256GCM content encryption, and ECDH-ES+A256KW (P-256,
// P-384, P-521) or RSA-OAEP-256 key wrapping. RSA1_5 is refused unless the
// caller opts in for old guests.
package jose

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"

	gojose "github.com/go-jose/go-jose/v4"
	jsonv2 "github.com/go-json-experiment/json"

	"github.com/cocoon-cc/cocoon/protocol"
)

// Key-wrapping algorithms of the protocol.
const (
	AlgECDHES  = "ECDH-ES+A256KW"
	AlgRSAOAEP = "RSA-OAEP-256"
	AlgRSA15   = "RSA1_5"
)

// MinRSABits is the smallest RSA TEE key accepted.
const MinRSABits = 2048

// MaxRSABits is the largest RSA TEE key accepted: sealing to a larger
// modulus costs the KBS time quadratic in its size.
const MaxRSABits = 16384

// Errors for a TEE key or a JWE that cannot be used.
var (
	ErrInvalidKey       = errors.New("invalid tee-pubkey")
	ErrAlgNotAllowed    = errors.New("key algorithm not allowed")
	ErrMalformedJWE     = errors.New("malformed JWE")
	ErrDecryptionFailed = errors.New("JWE decryption failed")
)

var curves = map[string]elliptic.Curve{
	"P-256": elliptic.P256(),
	"P-384": elliptic.P384(),
	"P-521": elliptic.P521(),
}

// ParsePublicKey checks a tee-pubkey and returns the Go key with its
// key-wrapping algorithm.
func ParsePublicKey(k protocol.TeePubKey, allowRSA15 bool) (crypto.PublicKey, gojose.KeyAlgorithm, error) {
	switch k.Kty {
	case "EC":
		return parseEC(k)
	case "RSA":
		return parseRSA(k, allowRSA15)
	}
	return nil, "", fmt.Errorf("%w: kty %q", ErrInvalidKey, k.Kty)
}

func parseEC(k protocol.TeePubKey) (crypto.PublicKey, gojose.KeyAlgorithm, error) {
	point, err := ecPoint(k)
	if err != nil {
		return nil, "", err
	}
	// Parsing checks that the point is on the curve: an off-curve point
	// would leak the shared secret.
	pub, err := ecdsa.ParseUncompressedPublicKey(curves[k.Crv], point)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return pub, gojose.ECDH_ES_A256KW, nil
}

// ecPoint is an EC tee-pubkey's uncompressed point, 0x04 || X || Y, read
// without big.Int: the KBS reads one at every attestation and release.
// A coordinate may come with leading zeros missing or added, as a
// big-endian integer of at most the curve's size.
func ecPoint(k protocol.TeePubKey) ([]byte, error) {
	if k.Alg != AlgECDHES {
		return nil, fmt.Errorf("%w: %q for an EC key", ErrAlgNotAllowed, k.Alg)
	}
	curve, ok := curves[k.Crv]
	if !ok {
		return nil, fmt.Errorf("%w: curve %q", ErrInvalidKey, k.Crv)
	}
	size := (curve.Params().BitSize + 7) / 8
	point := make([]byte, 1+2*size)
	point[0] = 4
	for i, c := range []struct{ name, b64 string }{{"x", k.X}, {"y", k.Y}} {
		b, err := base64.RawURLEncoding.DecodeString(c.b64)
		for len(b) > size && b[0] == 0 {
			b = b[1:]
		}
		if err != nil || len(c.b64) == 0 || len(b) > size {
			return nil, fmt.Errorf("%w: %s", ErrInvalidKey, c.name)
		}
		copy(point[1+(i+1)*size-len(b):], b)
	}
	return point, nil
}

func parseRSA(k protocol.TeePubKey, allowRSA15 bool) (crypto.PublicKey, gojose.KeyAlgorithm, error) {
	var alg gojose.KeyAlgorithm
	switch {
	case k.Alg == AlgRSAOAEP:
		alg = gojose.RSA_OAEP_256
	case k.Alg == AlgRSA15 && allowRSA15:
		alg = gojose.RSA1_5
	default:
		return nil, "", fmt.Errorf("%w: %q for an RSA key", ErrAlgNotAllowed, k.Alg)
	}
	n, err := b64Int(k.N)
	if err != nil {
		return nil, "", fmt.Errorf("%w: n: %v", ErrInvalidKey, err)
	}
	e, err := b64Int(k.E)
	if err != nil || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return nil, "", fmt.Errorf("%w: bad exponent", ErrInvalidKey)
	}
	if n.BitLen() < MinRSABits || n.BitLen() > MaxRSABits {
		return nil, "", fmt.Errorf("%w: RSA key of %d bits, want %d to %d", ErrInvalidKey, n.BitLen(), MinRSABits, MaxRSABits)
	}
	if n.Bit(0) == 0 {
		return nil, "", fmt.Errorf("%w: RSA modulus is even", ErrInvalidKey)
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, alg, nil
}

func b64Int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, errors.New("empty")
	}
	return new(big.Int).SetBytes(b), nil
}

// Encrypt seals plaintext to the TEE key as a flattened JWE.
func Encrypt(k protocol.TeePubKey, plaintext []byte, allowRSA15 bool) (*protocol.Response, error) {
	if k.Kty == "EC" {
		// Straight to the form key agreement takes; NewPublicKey checks
		// that the point is on the curve.
		point, err := ecPoint(k)
		if err != nil {
			return nil, err
		}
		pub, err := ecdhCurves[k.Crv].NewPublicKey(point)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
		}
		return sealECDHES(pub, k.Crv, plaintext)
	}
	pub, alg, err := ParsePublicKey(k, allowRSA15)
	if err != nil {
		return nil, err
	}
	enc, err := gojose.NewEncrypter(gojose.A256GCM, gojose.Recipient{Algorithm: alg, Key: pub}, nil)
	if err != nil {
		return nil, fmt.Errorf("jwe: %w", err)
	}
	obj, err := enc.Encrypt(plaintext)
	if err != nil {
		return nil, fmt.Errorf("jwe: %w", err)
	}
	var resp protocol.Response
	if err := json.Unmarshal([]byte(obj.FullSerialize()), &resp); err != nil {
		return nil, fmt.Errorf("jwe: %w", err)
	}
	return &resp, nil
}

// Decrypt opens a resource JWE with the TEE's private key. Only the
// algorithms of the protocol are accepted.
func Decrypt(priv crypto.PrivateKey, resp *protocol.Response) ([]byte, error) {
	hb, err := base64.RawURLEncoding.DecodeString(resp.Protected)
	if err != nil {
		return nil, fmt.Errorf("%w: protected header: %v", ErrMalformedJWE, err)
	}
	var hdr jweHeader
	if err := jsonv2.Unmarshal(hb, &hdr); err != nil {
		return nil, fmt.Errorf("%w: protected header: %v", ErrMalformedJWE, err)
	}
	if ec, ok := priv.(*ecdsa.PrivateKey); ok {
		if priv, err = ec.ECDH(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
		}
	}
	if ec, ok := priv.(*ecdh.PrivateKey); ok {
		if hdr.Alg != AlgECDHES {
			return nil, fmt.Errorf("%w: %q with an EC key", ErrMalformedJWE, hdr.Alg)
		}
		return openECDHES(ec, &hdr, resp)
	}
	raw, err := json.Marshal(resp)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedJWE, err)
	}
	obj, err := gojose.ParseEncryptedJSON(string(raw),
		[]gojose.KeyAlgorithm{gojose.ECDH_ES_A256KW, gojose.RSA_OAEP_256, gojose.RSA1_5},
		[]gojose.ContentEncryption{gojose.A256GCM})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedJWE, err)
	}
	out, err := obj.Decrypt(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecryptionFailed, err)
	}
	return out, nil
}
