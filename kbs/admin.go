package kbs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/store"
)

// Admin authorization errors.
var (
	ErrAdminNoToken   = errors.New("no admin bearer token")
	ErrAdminBadToken  = errors.New("admin token is not valid")
	ErrAdminForbidden = errors.New("role not allowed for this endpoint")
	ErrAdminDenyAll   = errors.New("admin API disabled (DenyAll)")
	// ErrPathNotCanonical: the request path is not the one form that
	// routing, ACLs and audit lines all read (see CanonicalPath), or an
	// admin call carries a query.
	ErrPathNotCanonical = errors.New("request path is not canonical")
)

// Authorization modes, named as Trustee names them.
const (
	ModeAuthenticated    = "AuthenticatedAuthorization"
	ModeDenyAll          = "DenyAll"
	ModeInsecureAllowAll = "InsecureAllowAll"
)

// AdminRole is the role Cocoon's own admin tokens carry.
const AdminRole = protocol.AdminRole

type issuer struct {
	name, audience string
	keys           []crypto.PublicKey
}

type acl struct {
	role    string
	re      *regexp.Regexp
	methods map[string]bool // nil: any method
	repos   map[string]bool // nil: any path; else only these repositories'
}

// Admin decides who may call the admin endpoints.
type Admin struct {
	mode    string
	issuers []issuer
	acls    []acl
	now     func() time.Time
}

// AdminIdentity is who an authorized admin call came from, for audit lines.
type AdminIdentity struct {
	Role, Issuer, Subject string
	// Tenant is the repository the call is about, if any.
	Tenant string
}

// NewAdmin builds the authorizer from [admin]. With no mode configured it
// never falls back to allowing everyone: it generates an Ed25519 key pair
// (once, kept in st and written to dataDir) and trusts tokens signed by it
// for role "admin".
func NewAdmin(ctx context.Context, c AdminConfig, st store.Store, dataDir string, log *slog.Logger) (*Admin, error) {
	a := &Admin{mode: c.AuthorizationMode, now: time.Now}
	switch c.AuthorizationMode {
	case ModeInsecureAllowAll:
		log.Warn("admin API open to anyone (authorization_mode = InsecureAllowAll): for development only")
		return a, nil
	case ModeDenyAll:
		return a, nil
	case "":
		priv, pub, err := EnsureAdminKey(ctx, st, dataDir)
		if err != nil {
			return nil, err
		}
		log.Info("admin API: no [admin] configured; trusting tokens signed by the generated key",
			"private_key", priv, "public_key", pub, "role", AdminRole)
		c.Authentication.BearerJWT.IdentityProviders = []IdentityProvider{{PublicKeyURI: pub}}
		c.Authorization.RegexACL.ACLs = []ACL{{Role: AdminRole, AllowedEndpoints: "^/.+$"}}
		a.mode = ModeAuthenticated
	case ModeAuthenticated:
	default:
		return nil, fmt.Errorf("admin: unknown authorization_mode %q", c.AuthorizationMode)
	}
	return a, a.configure(c)
}

func (a *Admin) configure(c AdminConfig) error {
	idps := c.Authentication.BearerJWT.IdentityProviders
	if len(idps) == 0 {
		return errors.New("admin: AuthenticatedAuthorization needs at least one identity provider")
	}
	for _, idp := range idps {
		keys, err := loadVerificationKeys(idp)
		if err != nil {
			return err
		}
		a.issuers = append(a.issuers, issuer{name: idp.Issuer, audience: idp.Audience, keys: keys})
	}
	seen := map[string]bool{}
	for _, r := range c.Authorization.RegexACL.ACLs {
		if seen[r.Role] {
			return fmt.Errorf("admin: role %q has two ACL entries", r.Role)
		}
		seen[r.Role] = true
		re, err := regexp.Compile(r.AllowedEndpoints)
		if err != nil {
			return fmt.Errorf("admin: ACL for role %q: %w", r.Role, err)
		}
		methods, err := aclMethods(r.AllowedMethods)
		if err != nil {
			return fmt.Errorf("admin: ACL for role %q: %w", r.Role, err)
		}
		repos, err := aclRepositories(r.Repositories)
		if err != nil {
			return fmt.Errorf("admin: ACL for role %q: %w", r.Role, err)
		}
		a.acls = append(a.acls, acl{role: r.Role, re: re, methods: methods, repos: repos})
	}
	return nil
}

// aclMethods reads allowed_methods; none means any, as Trustee's ACLs,
// which cannot name methods, allow.
func aclMethods(names []string) (map[string]bool, error) {
	if len(names) == 0 {
		return nil, nil
	}
	m := map[string]bool{}
	for _, n := range names {
		switch n = strings.ToUpper(n); n {
		case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete:
			m[n] = true
		default:
			return nil, fmt.Errorf("allowed_methods: %q is not GET, POST, PUT or DELETE", n)
		}
	}
	return m, nil
}

// aclRepositories reads repositories; none means the role is no tenant's.
func aclRepositories(names []string) (map[string]bool, error) {
	if len(names) == 0 {
		return nil, nil
	}
	m := map[string]bool{}
	for _, n := range names {
		if !protocol.ValidSegment(n) {
			return nil, fmt.Errorf("repositories: %q is not a resource path segment", n)
		}
		m[n] = true
	}
	return m, nil
}

// RepositoryOf names the repository (tenant) a canonical API path is
// about: a resource's, or a repository's resource policy; "" for any
// other path.
func RepositoryOf(path string) string {
	for _, p := range []string{Prefix + "resource/", Prefix + "resource-policy/"} {
		if rest, ok := strings.CutPrefix(path, p); ok {
			repo, _, _ := strings.Cut(rest, "/")
			return repo
		}
	}
	return ""
}

// CanonicalPath returns the path of u when it is in canonical form:
// absolute, percent-decoded once (an encoded slash is refused: decoding it
// would change where segments end), without empty (a "//" or a trailing
// slash), "." or ".." segments. Routing, admin ACLs and audit lines all
// read this one form, so no spelling of a path reaches an endpoint that
// an ACL did not see.
func CanonicalPath(u *url.URL) (string, error) {
	p := u.Path
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%w: %q is not absolute", ErrPathNotCanonical, p)
	}
	if strings.Contains(strings.ToLower(u.RawPath), "%2f") {
		return "", fmt.Errorf("%w: %q has an encoded slash", ErrPathNotCanonical, u.RawPath)
	}
	if p == "/" {
		return p, nil
	}
	for _, seg := range strings.Split(p[1:], "/") {
		switch seg {
		case "":
			return "", fmt.Errorf("%w: %q has an empty segment or a trailing slash", ErrPathNotCanonical, p)
		case ".", "..":
			return "", fmt.Errorf("%w: %q has a dot segment", ErrPathNotCanonical, p)
		}
	}
	return p, nil
}

// adminPath is the canonical path of an admin call, which takes no query:
// a query could only be a place to hide text from an ACL.
func adminPath(u *url.URL) (string, error) {
	p, err := CanonicalPath(u)
	if err != nil {
		return "", err
	}
	if u.RawQuery != "" || u.ForceQuery {
		return "", fmt.Errorf("%w: admin endpoints take no query", ErrPathNotCanonical)
	}
	return p, nil
}

func loadVerificationKeys(idp IdentityProvider) ([]crypto.PublicKey, error) {
	switch {
	case idp.PublicKeyURI != "":
		b, err := os.ReadFile(strings.TrimPrefix(idp.PublicKeyURI, "file://"))
		if err != nil {
			return nil, fmt.Errorf("admin: public_key_uri: %w", err)
		}
		k, err := ParsePublicKeyPEM(b)
		if err != nil {
			return nil, fmt.Errorf("admin: public_key_uri %s: %w", idp.PublicKeyURI, err)
		}
		return []crypto.PublicKey{k}, nil
	case idp.JWKSetURI != "":
		b, err := os.ReadFile(strings.TrimPrefix(idp.JWKSetURI, "file://"))
		if err != nil {
			return nil, fmt.Errorf("admin: jwk_set_uri: %w", err)
		}
		var set gojose.JSONWebKeySet
		if err := json.Unmarshal(b, &set); err != nil {
			return nil, fmt.Errorf("admin: jwk_set_uri %s: %w", idp.JWKSetURI, err)
		}
		var keys []crypto.PublicKey
		for _, k := range set.Keys {
			keys = append(keys, k.Key)
		}
		return keys, nil
	}
	return nil, errors.New("admin: identity provider needs public_key_uri or jwk_set_uri")
}

// ParsePublicKeyPEM reads an Ed25519 or ECDSA public key.
func ParsePublicKeyPEM(b []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	switch k.(type) {
	case ed25519.PublicKey, *ecdsa.PublicKey:
		return k, nil
	}
	return nil, fmt.Errorf("unsupported admin key type %T", k)
}

type adminClaims struct {
	jwt.Claims
	Role string `json:"role"`
}

// Check authorizes an admin request: its canonical path (no query) and
// method must be allowed to the role of its token.
func (a *Admin) Check(r *http.Request) (*AdminIdentity, error) {
	path, err := adminPath(r.URL)
	if err != nil {
		return nil, err
	}
	switch a.mode {
	case ModeInsecureAllowAll:
		return &AdminIdentity{Role: "insecure-allow-all", Tenant: RepositoryOf(path)}, nil
	case ModeDenyAll:
		return nil, ErrAdminDenyAll
	}
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || raw == "" {
		return nil, ErrAdminNoToken
	}
	claims, iss, err := a.verify(strings.TrimSpace(raw))
	if err != nil {
		return nil, err
	}
	tenant := RepositoryOf(path)
	for _, rule := range a.acls {
		if rule.role == claims.Role && (rule.methods == nil || rule.methods[r.Method]) && rule.re.MatchString(path) &&
			(rule.repos == nil || rule.repos[tenant]) {
			return &AdminIdentity{Role: claims.Role, Issuer: iss, Subject: claims.Subject, Tenant: tenant}, nil
		}
	}
	return nil, fmt.Errorf("%w: role %q, %s %s", ErrAdminForbidden, claims.Role, r.Method, path)
}

func (a *Admin) verify(raw string) (*adminClaims, string, error) {
	tok, err := jwt.ParseSigned(raw, []gojose.SignatureAlgorithm{gojose.EdDSA, gojose.ES256, gojose.ES384})
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrAdminBadToken, err)
	}
	for _, iss := range a.issuers {
		for _, k := range iss.keys {
			var c adminClaims
			if tok.Claims(k, &c) != nil {
				continue
			}
			exp := jwt.Expected{Issuer: iss.name, Time: a.now()}
			if iss.audience != "" {
				exp.AnyAudience = jwt.Audience{iss.audience}
			}
			if c.Expiry == nil {
				return nil, "", fmt.Errorf("%w: no exp claim", ErrAdminBadToken)
			}
			if err := c.ValidateWithLeeway(exp, 30*time.Second); err != nil {
				return nil, "", fmt.Errorf("%w: %v%s", ErrAdminBadToken, err, iss.expects(err))
			}
			if c.Role == "" {
				return nil, "", fmt.Errorf("%w: no role claim", ErrAdminBadToken)
			}
			return &c, iss.name, nil
		}
	}
	return nil, "", fmt.Errorf("%w: no trusted key verifies it", ErrAdminBadToken)
}

// expects says what the identity provider wanted of a claim the token
// failed on: admins sign their own tokens and need to know.
func (iss issuer) expects(err error) string {
	switch {
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return fmt.Sprintf(" (the identity provider of this key expects issuer %q)", iss.name)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return fmt.Sprintf(" (the identity provider of this key expects audience %q)", iss.audience)
	}
	return ""
}

// adminKeyName is the KBS's own admin key in the store's KeyNamespace.
const adminKeyName = "admin-ed25519"

// EnsureAdminKey returns the paths of the KBS's own admin key pair in
// dataDir. The key lives in the store (generated on first use, or taken
// from dataDir where an earlier version left it), so replicas sharing the
// store trust the same key; each writes it to its own dataDir for the
// operator.
func EnsureAdminKey(ctx context.Context, st store.Store, dataDir string) (privPath, pubPath string, err error) {
	dir := filepath.Join(dataDir, "admin")
	privPath, pubPath = filepath.Join(dir, "private.key"), filepath.Join(dir, "public.pub")
	der, err := loadOrCreate(ctx, st, adminKeyName, func() []byte { return adminKeyOnDisk(privPath) })
	if err != nil {
		return "", "", fmt.Errorf("admin: key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	priv, ok := k.(ed25519.PrivateKey)
	if err != nil || !ok {
		return "", "", errors.New("admin: stored key is not an Ed25519 PKCS#8 key")
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(priv.Public())
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("admin: %w", err)
	}
	if err := writeIfChanged(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	if err := writeIfChanged(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return "", "", err
	}
	return privPath, pubPath, nil
}

// adminKeyOnDisk is the PKCS#8 DER of the Ed25519 key at path, or of a
// new one when there is none that reads.
func adminKeyOnDisk(path string) []byte {
	if b, err := os.ReadFile(path); err == nil {
		if block, _ := pem.Decode(b); block != nil {
			if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
				if _, ok := k.(ed25519.PrivateKey); ok {
					return block.Bytes
				}
			}
		}
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	return der
}

// writeIfChanged replaces path with b (through a renamed temporary file)
// unless it holds b already.
func writeIfChanged(path string, b []byte, mode os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// Authorize is Check for APIs that only log who called.
func (a *Admin) Authorize(r *http.Request) (string, error) {
	id, err := a.Check(r)
	if err != nil {
		return "", err
	}
	return id.Role + ":" + id.Subject, nil
}
