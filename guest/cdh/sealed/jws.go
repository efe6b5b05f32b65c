package sealed

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"

	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
)

// Prefix starts every sealed secret.
const Prefix = "sealed."

// maxLen bounds a sealed secret; Kubernetes Secrets stop at 1 MiB.
const maxLen = 1 << 20

// header is the JWS protected header.
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

// jws is a parsed, not yet verified, sealed secret.
type jws struct {
	kid          resource.URI
	signingInput string
	payload      []byte
	signature    []byte
}

// parseJWS splits and decodes a sealed secret.
func parseJWS(secret []byte) (*jws, error) {
	if len(secret) > maxLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, maxLen)
	}
	s, ok := strings.CutPrefix(strings.TrimSpace(string(secret)), Prefix)
	if !ok {
		return nil, fmt.Errorf("%w: does not start with %q", ErrMalformed, Prefix)
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: want sealed.<header>.<payload>.<signature>", ErrMalformed)
	}
	var raw [3][]byte
	for i, p := range parts {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			return nil, fmt.Errorf("%w: part %d is not base64url without padding", ErrMalformed, i+1)
		}
		raw[i] = b
	}
	var h header
	if err := json.Unmarshal(raw[0], &h); err != nil {
		return nil, fmt.Errorf("%w: header is not JSON", ErrMalformed)
	}
	if h.Alg != "ES256" || len(raw[2]) == 0 {
		return nil, fmt.Errorf("%w: alg %q", ErrUnsigned, h.Alg)
	}
	kid, err := resource.Parse(h.Kid)
	if err != nil {
		return nil, fmt.Errorf("%w: kid: %w", ErrMalformed, err)
	}
	return &jws{kid: kid, signingInput: parts[0] + "." + parts[1], payload: raw[1], signature: raw[2]}, nil
}

// verify checks the ES256 signature (raw r || s, RFC 7518 3.4).
func (j *jws) verify(pub *ecdsa.PublicKey) error {
	if len(j.signature) != 64 {
		return fmt.Errorf("%w: ES256 signature must be 64 bytes", ErrBadSignature)
	}
	d := sha256.Sum256([]byte(j.signingInput))
	r, s := new(big.Int).SetBytes(j.signature[:32]), new(big.Int).SetBytes(j.signature[32:])
	if !ecdsa.Verify(pub, d[:], r, s) {
		return ErrBadSignature
	}
	return nil
}

// Seal signs s with key; kid is the resource URI the verification key
// will be stored at in the KBS.
func Seal(s *Secret, key *ecdsa.PrivateKey, kid string) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	if _, err := resource.Parse(kid); err != nil {
		return "", fmt.Errorf("kid: %w", err)
	}
	if key.Curve != elliptic.P256() {
		return "", fmt.Errorf("%w: signing key must be P-256", ErrBadKey)
	}
	h, err := json.Marshal(header{Alg: "ES256", Kid: kid})
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	input := b64(h) + "." + b64(p)
	d := sha256.Sum256([]byte(input))
	r, sig, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		return "", err
	}
	raw := make([]byte, 64)
	r.FillBytes(raw[:32])
	sig.FillBytes(raw[32:])
	return Prefix + input + "." + b64(raw), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
