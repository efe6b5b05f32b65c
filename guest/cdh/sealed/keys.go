package sealed

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
)

// jwk is an EC public JWK, the verification key format upstream stores in
// the KBS.
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	Alg string `json:"alg,omitempty"`
}

// ParseVerificationKey parses a P-256 public JWK.
func ParseVerificationKey(b []byte) (*ecdsa.PublicKey, error) {
	var k jwk
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("%w: not a JWK", ErrBadKey)
	}
	if k.Kty != "EC" || k.Crv != "P-256" {
		return nil, fmt.Errorf("%w: want an EC P-256 JWK, got kty %q crv %q", ErrBadKey, k.Kty, k.Crv)
	}
	x, errX := base64.RawURLEncoding.DecodeString(k.X)
	y, errY := base64.RawURLEncoding.DecodeString(k.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return nil, fmt.Errorf("%w: x and y must be 32 bytes of base64url", ErrBadKey)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	return pub, nil
}

// VerificationKey renders pub as the JWK to store in the KBS.
func VerificationKey(pub *ecdsa.PublicKey) ([]byte, error) {
	raw, err := pub.Bytes()
	if err != nil || len(raw) != 65 {
		return nil, fmt.Errorf("%w: not a P-256 key", ErrBadKey)
	}
	return json.Marshal(jwk{Kty: "EC", Crv: "P-256", Alg: "ES256", X: b64(raw[1:33]), Y: b64(raw[33:])})
}

// ParseSigningKeyPEM reads an owner's P-256 private key (PKCS#8 or SEC 1).
func ParseSigningKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrBadKey)
	}
	var key any
	var err error
	if block.Type == "EC PRIVATE KEY" {
		key, err = x509.ParseECPrivateKey(block.Bytes)
	} else {
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	k, ok := key.(*ecdsa.PrivateKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: want an EC P-256 private key", ErrBadKey)
	}
	return k, nil
}
