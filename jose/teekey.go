package jose

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"

	"github.com/cocoon-cc/cocoon/protocol"
)

// TEEKey is a guest's ephemeral key pair: the public half goes into the
// attestation's runtime data, the private half opens released resources.
type TEEKey struct {
	priv crypto.PrivateKey // *ecdh.PrivateKey or *rsa.PrivateKey
	pub  protocol.TeePubKey
}

// GenerateTEEKey makes a new key: "EC" (P-256, ECDH-ES+A256KW, the default)
// or "RSA" (3072 bits, RSA-OAEP-256).
func GenerateTEEKey(kty string) (*TEEKey, error) {
	switch kty {
	case "", "EC":
		k, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		return NewTEEKey(k)
	case "RSA":
		k, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			return nil, err
		}
		return NewTEEKey(k)
	}
	return nil, fmt.Errorf("%w: key type %q", ErrInvalidKey, kty)
}

// NewTEEKey wraps an existing EC (crypto/ecdsa or crypto/ecdh, NIST
// curve) or RSA private key.
func NewTEEKey(priv crypto.PrivateKey) (*TEEKey, error) {
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		// Kept in the form key agreement uses: converting costs a scalar
		// multiplication.
		ek, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
		}
		return NewTEEKey(ek)
	case *ecdh.PrivateKey:
		crv := curveName(k.Curve())
		if crv == "" {
			return nil, fmt.Errorf("%w: curve %v", ErrInvalidKey, k.Curve())
		}
		point := k.PublicKey().Bytes() // 0x04 || X || Y
		n := (len(point) - 1) / 2
		pub := protocol.TeePubKey{Kty: "EC", Alg: AlgECDHES, Crv: crv, X: b64(point[1 : 1+n]), Y: b64(point[1+n:])}
		return &TEEKey{priv: k, pub: pub}, nil
	case *rsa.PrivateKey:
		pub := protocol.TeePubKey{Kty: "RSA", Alg: AlgRSAOAEP,
			N: b64(k.N.Bytes()), E: b64(bigEndian(k.E))}
		return &TEEKey{priv: k, pub: pub}, nil
	}
	return nil, fmt.Errorf("%w: %T", ErrInvalidKey, priv)
}

// LoadTEEKeyPEM reads a PKCS#8, PKCS#1 or SEC 1 PEM private key, as
// kbs-client's --tee-key-file takes.
func LoadTEEKeyPEM(data []byte) (*TEEKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrInvalidKey)
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return NewTEEKey(k)
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return NewTEEKey(k)
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return NewTEEKey(k)
	}
	return nil, fmt.Errorf("%w: unsupported PEM private key", ErrInvalidKey)
}

// Public is the JWK sent as runtime-data tee-pubkey.
func (k *TEEKey) Public() protocol.TeePubKey { return k.pub }

// Decrypt opens a resource sealed to this key.
func (k *TEEKey) Decrypt(resp *protocol.Response) ([]byte, error) { return Decrypt(k.priv, resp) }

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func bigEndian(e int) []byte {
	var out []byte
	for ; e > 0; e >>= 8 {
		out = append([]byte{byte(e)}, out...)
	}
	return out
}
