package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/rvps"
)

// Admin calls the KBS admin API with a bearer token.
type Admin struct {
	url   string
	http  *http.Client
	token func() (string, error)
}

// NewAdmin returns an admin client sending the given token.
func NewAdmin(url string, hc *http.Client, token string) *Admin {
	return &Admin{url: strings.TrimRight(url, "/"), http: hc, token: func() (string, error) { return token, nil }}
}

// NewAdminWithKey returns an admin client that signs a short-lived admin
// token (role admin) with key for every call.
func NewAdminWithKey(url string, hc *http.Client, key crypto.Signer) *Admin {
	return NewAdminSigning(url, hc, key, TokenClaims{Role: protocol.AdminRole})
}

// NewAdminSigning returns an admin client that signs a short-lived admin
// token making claims c with key for every call.
func NewAdminSigning(url string, hc *http.Client, key crypto.Signer, c TokenClaims) *Admin {
	return &Admin{url: strings.TrimRight(url, "/"), http: hc, token: func() (string, error) {
		return SignToken(key, c, 5*time.Minute)
	}}
}

func (a *Admin) call(ctx context.Context, method, path string, body []byte, out any) error {
	tok, err := a.token()
	if err != nil {
		return err
	}
	var rd *bytes.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	} else {
		rd = bytes.NewReader(nil)
	}
	return Do(ctx, a.http, method, a.url+path, tok, rd, out)
}

func (a *Admin) callJSON(ctx context.Context, path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return a.call(ctx, http.MethodPost, path, b, nil)
}

// SetResource stores a resource at repo/type/tag.
func (a *Admin) SetResource(ctx context.Context, path string, data []byte) error {
	return a.resource(ctx, http.MethodPost, path, data)
}

// DeleteResource removes a resource.
func (a *Admin) DeleteResource(ctx context.Context, path string) error {
	return a.resource(ctx, http.MethodDelete, path, nil)
}

func (a *Admin) resource(ctx context.Context, method, path string, data []byte) error {
	p, err := protocol.ParseResourcePath(strings.TrimPrefix(path, "/"))
	if err != nil {
		return err
	}
	return a.call(ctx, method, "/kbs/v0/resource/"+p.String(), data, nil)
}

// SetResourcePolicy replaces the resource policy.
func (a *Admin) SetResourcePolicy(ctx context.Context, rego string) error {
	return a.callJSON(ctx, "/kbs/v0/resource-policy", map[string]string{"policy": b64url(rego)})
}

// SetSPIFFEPolicy replaces the policy deciding which SPIFFE IDs an
// appraisal may receive (a Cocoon extension).
func (a *Admin) SetSPIFFEPolicy(ctx context.Context, rego string) error {
	return a.callJSON(ctx, "/kbs/v0/spiffe-policy", map[string]string{"policy": b64url(rego)})
}

// SetRepositoryPolicy replaces the resource policy of one repository
// (tenant), which applies beside the global one (a Cocoon extension).
func (a *Admin) SetRepositoryPolicy(ctx context.Context, repo, rego string) error {
	if !protocol.ValidSegment(repo) {
		return fmt.Errorf("kbs client: repository %q is not a resource path segment", repo)
	}
	return a.callJSON(ctx, "/kbs/v0/resource-policy/"+repo, map[string]string{"policy": b64url(rego)})
}

// SetAttestationPolicy stores an attestation policy.
func (a *Admin) SetAttestationPolicy(ctx context.Context, id, typ, rego string) error {
	return a.callJSON(ctx, "/kbs/v0/attestation-policy",
		map[string]string{"type": typ, "policy_id": id, "policy": b64url(rego)})
}

// RegisterSampleReferenceValue registers name = value through the sample
// RVPS provenance type.
func (a *Admin) RegisterSampleReferenceValue(ctx context.Context, name string, value any) error {
	payload, err := json.Marshal(map[string]any{name: value})
	if err != nil {
		return err
	}
	return a.callJSON(ctx, "/kbs/v0/reference-value", rvps.Message{Version: rvps.MessageVersion, Type: "sample",
		Payload: base64.StdEncoding.EncodeToString(payload)})
}

// RegisterReferenceValues posts an RVPS message as is (e.g. one printed
// by cocoon-measure --message).
func (a *Admin) RegisterReferenceValues(ctx context.Context, message []byte) error {
	return a.call(ctx, http.MethodPost, "/kbs/v0/reference-value", message, nil)
}

// GetReferenceValue returns the JSON of a reference value (a KBS refuses
// an unknown id with RvpsError).
func (a *Admin) GetReferenceValue(ctx context.Context, id string) (json.RawMessage, error) {
	var out []byte
	err := a.call(ctx, http.MethodGet, "/kbs/v0/reference-value/"+id, nil, &out)
	return out, err
}

func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TokenClaims are what an admin token says besides its lifetime: the role
// the KBS's ACLs name, and the issuer and audience its identity provider
// entry expects (none when empty).
type TokenClaims struct {
	Role, Issuer, Audience string
}

// SignAdminToken makes a short-lived admin JWT for role, as kbs-client and
// coco-keyprovider do with --auth-private-key.
func SignAdminToken(priv crypto.Signer, role string, ttl time.Duration) (string, error) {
	return SignToken(priv, TokenClaims{Role: role}, ttl)
}

// SignToken makes an admin JWT with an Ed25519 (EdDSA), P-256 (ES256) or
// P-384 (ES384) private key.
func SignToken(priv crypto.Signer, c TokenClaims, ttl time.Duration) (string, error) {
	alg, err := signingAlgorithm(priv)
	if err != nil {
		return "", err
	}
	s, err := gojose.NewSigner(gojose.SigningKey{Algorithm: alg, Key: priv}, (&gojose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	claims := struct {
		jwt.Claims
		Role string `json:"role"`
	}{jwt.Claims{Issuer: c.Issuer, IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		Expiry: jwt.NewNumericDate(now.Add(ttl))}, c.Role}
	if c.Audience != "" {
		claims.Audience = jwt.Audience{c.Audience}
	}
	return jwt.Signed(s).Claims(claims).Serialize()
}

// signingAlgorithm is the JWS algorithm of an admin key, among those the
// KBS accepts.
func signingAlgorithm(k crypto.Signer) (gojose.SignatureAlgorithm, error) {
	switch k := k.(type) {
	case ed25519.PrivateKey:
		return gojose.EdDSA, nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return gojose.ES256, nil
		case elliptic.P384():
			return gojose.ES384, nil
		}
		return "", fmt.Errorf("admin key: ECDSA %s is not supported (P-256, P-384)", k.Curve.Params().Name)
	}
	return "", fmt.Errorf("admin key: %T is not supported (Ed25519, ECDSA P-256 or P-384)", k)
}

// ErrPublicKey: a public key (or certificate) was given where a private
// key is needed.
var ErrPublicKey = errors.New("a public key, not a private key")

// LoadSigningKey reads an admin private key (PKCS#8 PEM: Ed25519 or ECDSA),
// as --auth-private-key names it.
func LoadSigningKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseSigningKey(path, b)
}

// ParseSigningKey parses an admin private key (PEM, as LoadSigningKey
// reads it); path names it in errors.
func ParseSigningKey(path string, b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	if block.Type == "PUBLIC KEY" || block.Type == "CERTIFICATE" {
		return nil, fmt.Errorf("%s: %w (PEM %s)", path, ErrPublicKey, block.Type)
	}
	var k any
	var err error
	if block.Type == "EC PRIVATE KEY" { // openssl ecparam -genkey's SEC 1 form
		k, err = x509.ParseECPrivateKey(block.Bytes)
	} else {
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", path)
	}
	return s, nil
}
