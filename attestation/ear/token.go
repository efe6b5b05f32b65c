package ear

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	jsonv2 "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"
)

// Token errors; each failed check has its own.
var (
	ErrMalformedToken = errors.New("malformed token")
	ErrUntrustedKey   = errors.New("token signed by an untrusted key")
	ErrBadSignature   = errors.New("token signature is invalid")
	ErrExpired        = errors.New("token expired")
	ErrNotYetValid    = errors.New("token issued in the future")
)

// Signer signs EAR tokens with an ES256 key. Its protected header never
// changes, so it is encoded once; each token costs one JSON encoding and
// one ECDSA signature.
type Signer struct {
	key    *ecdsa.PrivateKey
	jwk    gojose.JSONWebKey
	header string // base64url of {"alg":"ES256","jwk":..,"typ":"JWT"}
}

// NewSigner wraps a P-256 private key; chain, if any, is published as the
// header JWK's x5c so verifiers can check the key against a CA.
func NewSigner(key *ecdsa.PrivateKey, chain []*x509.Certificate) (*Signer, error) {
	if key.Curve != elliptic.P256() {
		return nil, errors.New("ear: only P-256 signing keys make ES256 tokens")
	}
	jwk := gojose.JSONWebKey{Key: &key.PublicKey, Algorithm: string(gojose.ES256), Certificates: chain}
	hdr, err := json.Marshal(struct {
		Alg string            `json:"alg"`
		JWK gojose.JSONWebKey `json:"jwk"`
		Typ string            `json:"typ"`
	}{"ES256", jwk, "JWT"})
	if err != nil {
		return nil, fmt.Errorf("ear: %w", err)
	}
	return &Signer{key: key, jwk: jwk, header: base64.RawURLEncoding.EncodeToString(hdr)}, nil
}

// Public is the verification key, for /.well-known/jwks.json.
func (s *Signer) Public() gojose.JSONWebKey { return s.jwk }

// Sign serializes and signs claims as a compact JWT (RFC 7515, ES256:
// the signature is R || S, 32 bytes each).
func (s *Signer) Sign(c *Claims) (string, error) {
	// encoding/json's output, by encoding/json/v2's faster encoder.
	body, err := jsonv2.Marshal(c, jsonv1.DefaultOptionsV1())
	if err != nil {
		return "", fmt.Errorf("ear: %w", err)
	}
	// One buffer for header.payload.signature: tokens are several KiB.
	enc := base64.RawURLEncoding
	tok := make([]byte, 0, len(s.header)+2+enc.EncodedLen(len(body))+enc.EncodedLen(64))
	tok = append(append(tok, s.header...), '.')
	tok = enc.AppendEncode(tok, body)
	digest := sha256.Sum256(tok)
	r, sv, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		return "", fmt.Errorf("ear: %w", err)
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	tok = enc.AppendEncode(append(tok, '.'), sig[:])
	return string(tok), nil
}

// VerifierOptions says which token signers are trusted.
type VerifierOptions struct {
	// Keys are trusted signing keys (this service's own, trusted JWK sets).
	Keys []gojose.JSONWebKey
	// Roots are CAs a header JWK's x5c chain may lead to.
	Roots *x509.CertPool
	// InsecureHeaderJWK trusts any key in the token header. Trustee offers
	// it for development; it makes the signature worthless.
	InsecureHeaderJWK bool
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Leeway tolerates clock skew on iat and exp.
	Leeway time.Duration
}

// cacheSize bounds the verified-token cache.
const cacheSize = 4096

// Verifier checks EAR tokens. Tokens it has verified (or that its own
// service issued) are remembered until they expire, so a guest fetching
// several resources pays for one signature check; the validity period is
// checked on every use.
type Verifier struct {
	opts VerifierOptions

	mu sync.RWMutex
	// cache is keyed by the token itself: hashing a KiB-long string for
	// the map costs a tenth of a SHA-256 of it, and nothing to allocate.
	cache map[string]verified
}

type verified struct {
	claims *Claims
	raw    map[string]any
}

// NewVerifier returns a Verifier for opts.
func NewVerifier(opts VerifierOptions) *Verifier {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Verifier{opts: opts, cache: map[string]verified{}}
}

// Remember records a token this process signed itself, from claims, as
// verified.
func (v *Verifier) Remember(token string, c *Claims) {
	v.remember(token, verified{claims: c, raw: c.Map()})
}

func (v *Verifier) remember(token string, e verified) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.cache) >= cacheSize {
		// Make room for a quarter of the cache at once, so that the sweep
		// costs O(1) per insertion: expired entries first, then any (map
		// order is random).
		now := v.opts.Now().Unix()
		for k, old := range v.cache {
			if old.claims.Expiry < now {
				delete(v.cache, k)
			}
		}
		for k := range v.cache {
			if len(v.cache) <= cacheSize*3/4 {
				break
			}
			delete(v.cache, k)
		}
	}
	v.cache[token] = e
}

// Verify checks a token's signature and validity period and returns its
// claims both typed and raw (the raw form is the resource policy's input;
// callers must not modify either).
func (v *Verifier) Verify(token string) (*Claims, map[string]any, error) {
	v.mu.RLock()
	e, ok := v.cache[token]
	v.mu.RUnlock()
	if !ok {
		var err error
		if e, err = v.verify(token); err != nil {
			return nil, nil, err
		}
		v.remember(token, e)
	}
	if err := v.checkPeriod(e.claims); err != nil {
		return nil, nil, err
	}
	return e.claims, e.raw, nil
}

func (v *Verifier) checkPeriod(c *Claims) error {
	now := v.opts.Now()
	if c.Expiry == 0 || now.After(time.Unix(c.Expiry, 0).Add(v.opts.Leeway)) {
		return ErrExpired
	}
	if now.Add(v.opts.Leeway).Before(time.Unix(c.IssuedAt, 0)) {
		return ErrNotYetValid
	}
	return nil
}

func (v *Verifier) verify(token string) (verified, error) {
	if strings.Count(token, ".") != 2 {
		return verified{}, fmt.Errorf("%w: not a compact JWS", ErrMalformedToken)
	}
	obj, err := gojose.ParseSignedCompact(token, []gojose.SignatureAlgorithm{gojose.ES256})
	if err != nil {
		return verified{}, fmt.Errorf("%w: %v", ErrMalformedToken, err)
	}
	payload, err := v.verifySignature(obj)
	if err != nil {
		return verified{}, err
	}
	e := verified{claims: &Claims{}}
	if err := json.Unmarshal(payload, e.claims); err != nil {
		return verified{}, fmt.Errorf("%w: %v", ErrMalformedToken, err)
	}
	if err := json.Unmarshal(payload, &e.raw); err != nil {
		return verified{}, fmt.Errorf("%w: %v", ErrMalformedToken, err)
	}
	return e, nil
}

func (v *Verifier) verifySignature(obj *gojose.JSONWebSignature) ([]byte, error) {
	hdr := obj.Signatures[0].Header
	if hdr.JSONWebKey != nil {
		if !v.trusts(hdr.JSONWebKey) {
			return nil, ErrUntrustedKey
		}
		return verifyWith(obj, hdr.JSONWebKey.Key)
	}
	for _, k := range v.opts.Keys {
		if hdr.KeyID != "" && k.KeyID != "" && k.KeyID != hdr.KeyID {
			continue
		}
		if out, err := obj.Verify(k.Key); err == nil {
			return out, nil
		}
	}
	return nil, ErrUntrustedKey
}

func verifyWith(obj *gojose.JSONWebSignature, key any) ([]byte, error) {
	out, err := obj.Verify(key)
	if err != nil {
		return nil, ErrBadSignature
	}
	return out, nil
}

// trusts decides whether a header JWK is one of ours, chains to a trusted
// CA, or (insecurely) is trusted blindly.
func (v *Verifier) trusts(jwk *gojose.JSONWebKey) bool {
	if v.opts.InsecureHeaderJWK {
		return true
	}
	pub, ok := jwk.Key.(*ecdsa.PublicKey)
	if !ok {
		return false
	}
	for _, k := range v.opts.Keys {
		if tk, ok := k.Key.(*ecdsa.PublicKey); ok && tk.Equal(pub) {
			return true
		}
	}
	if v.opts.Roots == nil || len(jwk.Certificates) == 0 {
		return false
	}
	leaf := jwk.Certificates[0]
	inter := x509.NewCertPool()
	for _, c := range jwk.Certificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: v.opts.Roots, Intermediates: inter,
		CurrentTime: v.opts.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return false
	}
	lk, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	return ok && lk.Equal(pub)
}
