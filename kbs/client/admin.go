package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
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
// token with key for every call.
func NewAdminWithKey(url string, hc *http.Client, key crypto.Signer) *Admin {
	return &Admin{url: strings.TrimRight(url, "/"), http: hc, token: func() (string, error) {
		return SignAdminToken(key, protocol.AdminRole, 5*time.Minute)
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

// GetReferenceValue returns the JSON of a reference value (null if none).
func (a *Admin) GetReferenceValue(ctx context.Context, id string) (json.RawMessage, error) {
	var out []byte
	err := a.call(ctx, http.MethodGet, "/kbs/v0/reference-value/"+id, nil, &out)
	return out, err
}

func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// SignAdminToken makes a short-lived admin JWT with an Ed25519 or ECDSA
// private key, as kbs-client and coco-keyprovider do with --auth-private-key.
func SignAdminToken(priv crypto.Signer, role string, ttl time.Duration) (string, error) {
	alg := gojose.EdDSA
	if _, ok := priv.(*ecdsa.PrivateKey); ok {
		alg = gojose.ES256
	}
	s, err := gojose.NewSigner(gojose.SigningKey{Algorithm: alg, Key: priv}, (&gojose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	claims := struct {
		jwt.Claims
		Role string `json:"role"`
	}{jwt.Claims{IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		Expiry: jwt.NewNumericDate(now.Add(ttl))}, role}
	return jwt.Signed(s).Claims(claims).Serialize()
}

// LoadSigningKey reads an admin private key (PKCS#8 PEM: Ed25519 or ECDSA),
// as --auth-private-key names it.
func LoadSigningKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", path)
	}
	return s, nil
}
