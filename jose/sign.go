package jose

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"

	gojose "github.com/go-jose/go-jose/v4"

	"github.com/cocoon-cc/cocoon/protocol"
)

// ErrBadSignature is returned for a JWS the TEE key did not sign.
var ErrBadSignature = errors.New("JWS not signed by the tee-pubkey")

// MaxJWSSize bounds a JWS a verifier reads.
const MaxJWSSize = 64 << 10

// signatureAlg is the JWS algorithm a TEE key signs with: ECDSA on its
// curve, or RSASSA-PSS for RSA keys.
func signatureAlg(k protocol.TeePubKey) (gojose.SignatureAlgorithm, error) {
	switch {
	case k.Kty == "RSA":
		return gojose.PS256, nil
	case k.Kty == "EC" && k.Crv == "P-256":
		return gojose.ES256, nil
	case k.Kty == "EC" && k.Crv == "P-384":
		return gojose.ES384, nil
	case k.Kty == "EC" && k.Crv == "P-521":
		return gojose.ES512, nil
	}
	return "", fmt.Errorf("%w: no signature algorithm for kty %q crv %q", ErrInvalidKey, k.Kty, k.Crv)
}

// Sign signs payload with the TEE key as a compact JWS. A request signed
// this way proves that it comes from the holder of the key an attestation
// token vouches for, not merely from a holder of the token.
func (k *TEEKey) Sign(payload []byte) (string, error) {
	alg, err := signatureAlg(k.pub)
	if err != nil {
		return "", err
	}
	var key any
	switch p := k.priv.(type) {
	case *ecdh.PrivateKey:
		if key, err = ecdsa.ParseRawPrivateKey(curves[k.pub.Crv], p.Bytes()); err != nil {
			return "", fmt.Errorf("%w: %v", ErrInvalidKey, err)
		}
	case *rsa.PrivateKey:
		key = p
	}
	signer, err := gojose.NewSigner(gojose.SigningKey{Algorithm: alg, Key: key}, nil)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// VerifySigned checks that the compact JWS was signed by the TEE key k,
// with the one algorithm that key signs with, and returns its payload.
func VerifySigned(k protocol.TeePubKey, jws string) ([]byte, error) {
	if len(jws) > MaxJWSSize {
		return nil, fmt.Errorf("%w: JWS over %d bytes", ErrBadSignature, MaxJWSSize)
	}
	alg, err := signatureAlg(k)
	if err != nil {
		return nil, err
	}
	// The key's own algorithm checks (curve point, RSA size) apply; the
	// key-wrapping algorithm it names is not what it signs with.
	pub, _, err := ParsePublicKey(k, false)
	if err != nil {
		return nil, err
	}
	obj, err := gojose.ParseSigned(jws, []gojose.SignatureAlgorithm{alg})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	payload, err := obj.Verify(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return payload, nil
}
