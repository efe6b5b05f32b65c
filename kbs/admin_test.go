package kbs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/protocol"
)

func bearerHdr(tok string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + tok}
}

// signJWT makes an admin JWT with arbitrary claims.
func signJWT(t testing.TB, key crypto.Signer, claims map[string]any) string {
	t.Helper()
	alg := gojose.EdDSA
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		alg = gojose.ES256
	}
	s, err := gojose.NewSigner(gojose.SigningKey{Algorithm: alg, Key: key}, (&gojose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestGeneratedAdminKey(t *testing.T) {
	k := newKBS(t, "")
	priv := filepath.Join(k.dataDir, "admin", "private.key")
	pub := filepath.Join(k.dataDir, "admin", "public.pub")
	st, err := os.Stat(priv)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v", st.Mode().Perm())
	}
	if _, ok := k.adminKey.(ed25519.PrivateKey); !ok {
		t.Fatalf("admin key is %T", k.adminKey)
	}
	pubPEM, _ := os.ReadFile(pub)
	pk, err := ParsePublicKeyPEM(pubPEM)
	if err != nil || !k.adminKey.Public().(ed25519.PublicKey).Equal(pk) {
		t.Fatalf("public.pub does not hold the private key's half: %v", err)
	}
	// The generated key administers.
	if err := k.admin(t).SetResource(bg, "default/key/a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	// A restart over the same data directory keeps the key.
	privPEM, _ := os.ReadFile(priv)
	k2 := newKBS(t, baseConfig(k.dataDir, ""))
	privPEM2, _ := os.ReadFile(priv)
	if !bytes.Equal(privPEM, privPEM2) {
		t.Fatal("the admin key was regenerated")
	}
	if r := k2.do(t, "POST", "/kbs/v0/resource/default/key/b", []byte("b"), bearerHdr(k.adminToken(t, AdminRole, time.Minute))); r.status != 200 {
		t.Errorf("old key after restart: %d %s", r.status, r.body)
	}
	// Any role but "admin" is refused by the generated ACL.
	if r := k.do(t, "POST", "/kbs/v0/resource/default/key/b", []byte("b"), bearerHdr(k.adminToken(t, "reader", time.Minute))); r.status != 401 || r.kind() != protocol.KindAdminAuth {
		t.Errorf("role reader: %d %s", r.status, r.body)
	}
}

func TestAdminRefusals(t *testing.T) {
	k := newKBS(t, "")
	_, otherEd, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	good := k.adminToken(t, AdminRole, time.Minute)
	hmacSigner, _ := gojose.NewSigner(gojose.SigningKey{Algorithm: gojose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	hmacTok, _ := jwt.Signed(hmacSigner).Claims(map[string]any{"role": "admin", "exp": now.Add(time.Hour).Unix()}).Serialize()
	toks := map[string]string{
		"none":             "",
		"garbage":          "garbage",
		"other key":        mustAdminToken(t, otherEd, AdminRole, time.Minute),
		"ES256 unknown":    mustAdminToken(t, ecKey, AdminRole, time.Minute),
		"expired":          k.adminToken(t, AdminRole, -time.Hour),
		"no role":          k.adminToken(t, "", time.Minute),
		"wrong role":       k.adminToken(t, "reader", time.Minute),
		"no exp":           signJWT(t, k.adminKey, map[string]any{"role": "admin", "iat": now.Unix()}),
		"not yet valid":    signJWT(t, k.adminKey, map[string]any{"role": "admin", "nbf": now.Add(time.Hour).Unix(), "exp": now.Add(2 * time.Hour).Unix()}),
		"HS256":            hmacTok,
		"flipped":          good[:len(good)-2] + flip(good[len(good)-2:]),
		"alg none":         "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString([]byte(`{"role":"admin","exp":9999999999}`)) + ".",
		"bearer lowercase": "",
	}
	policyBody, _ := json.Marshal(map[string]string{"policy": base64.RawURLEncoding.EncodeToString([]byte(respolicy.AllowAll))})
	endpoints := []struct{ method, path string }{
		{"POST", "/kbs/v0/resource/default/key/x"},
		{"DELETE", "/kbs/v0/resource/default/key/x"},
		{"POST", "/kbs/v0/resource-policy"},
		{"GET", "/kbs/v0/resource-policy"},
		{"POST", "/kbs/v0/attestation-policy"},
		{"POST", "/kbs/v0/reference-value"},
		{"GET", "/kbs/v0/reference-value/svn"},
	}
	var cases []badCase
	for name, tok := range toks {
		hdr := bearerHdr(tok)
		if tok == "" {
			hdr = nil
		}
		if name == "bearer lowercase" {
			hdr = map[string]string{"Authorization": "bearer " + good}
		}
		for _, ep := range endpoints {
			cases = append(cases, badCase{name + " " + ep.method + " " + ep.path, ep.method, ep.path, policyBody, hdr, 401, protocol.KindAdminAuth})
		}
	}
	k.expectRefused(t, cases)
	// The good token passes the same endpoints.
	if r := k.do(t, "POST", "/kbs/v0/resource-policy", policyBody, bearerHdr(good)); r.status != 200 {
		t.Errorf("good token: %d %s", r.status, r.body)
	}
}

func mustAdminToken(t testing.TB, key crypto.Signer, role string, ttl time.Duration) string {
	t.Helper()
	tok, err := client.SignAdminToken(key, role, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// edAdminKBS starts a KBS that trusts admin tokens signed by a new Ed25519
// key (its public half in dir/ed.pub); more is TOML after that identity
// provider: more providers, the ACLs.
func edAdminKBS(t *testing.T, dir, more string) (*testKBS, ed25519.PrivateKey) {
	t.Helper()
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(edPub)
	writePEM(t, filepath.Join(dir, "ed.pub"), "PUBLIC KEY", der)
	k := newKBS(t, baseConfig(dir, fmt.Sprintf(`
[admin]
authorization_mode = "AuthenticatedAuthorization"

[[admin.authentication.bearer_jwt.identity_providers]]
public_key_uri = "file://%s/ed.pub"
%s`, dir, more)))
	return k, edPriv
}

// aclKBS has two identity providers and role-restricted ACLs.
func aclKBS(t *testing.T) (*testKBS, ed25519.PrivateKey, *ecdsa.PrivateKey) {
	t.Helper()
	dir := t.TempDir()
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	set, _ := json.Marshal(gojose.JSONWebKeySet{Keys: []gojose.JSONWebKey{{Key: &ecKey.PublicKey, Algorithm: "ES256"}}})
	os.WriteFile(filepath.Join(dir, "jwks.json"), set, 0o600)
	k, edPriv := edAdminKBS(t, dir, fmt.Sprintf(`
[[admin.authentication.bearer_jwt.identity_providers]]
issuer = "https://idp.example"
audience = "kbs"
jwk_set_uri = "%s/jwks.json"

[[admin.authorization.regex_acl.acls]]
role = "policy-admin"
allowed_endpoints = "^/kbs/v0/resource-policy$"

[[admin.authorization.regex_acl.acls]]
role = "rv-reader"
allowed_endpoints = "^/kbs/v0/reference-value/.+$"

[[admin.authorization.regex_acl.acls]]
role = "admin"
allowed_endpoints = "^/kbs/v0/.+$"
`, dir))
	return k, edPriv, ecKey
}

func TestAdminACL(t *testing.T) {
	k, ed, ec := aclKBS(t)
	if k.adminKey != nil {
		t.Fatal("an admin key was generated although [admin] is configured")
	}
	policyBody, _ := json.Marshal(map[string]string{"policy": base64.RawURLEncoding.EncodeToString([]byte(respolicy.AllowAll))})
	polAdmin := mustAdminToken(t, ed, "policy-admin", time.Minute)
	if r := k.do(t, "POST", "/kbs/v0/resource-policy", policyBody, bearerHdr(polAdmin)); r.status != 200 {
		t.Fatalf("policy-admin sets the resource policy: %d %s", r.status, r.body)
	}
	if r := k.do(t, "GET", "/kbs/v0/resource-policy", nil, bearerHdr(polAdmin)); r.status != 200 {
		t.Errorf("policy-admin reads the resource policy: %d %s", r.status, r.body)
	}
	rvReader := mustAdminToken(t, ed, "rv-reader", time.Minute)
	msg := []byte(`{"version":"0.1.0","type":"sample","payload":"` + base64.StdEncoding.EncodeToString([]byte(`{"svn":["1"]}`)) + `"}`)
	k.expectRefused(t, []badCase{
		{"policy-admin sets a resource", "POST", "/kbs/v0/resource/default/key/x", []byte("x"), bearerHdr(polAdmin), 401, protocol.KindAdminAuth},
		{"policy-admin deletes a resource", "DELETE", "/kbs/v0/resource/default/key/x", nil, bearerHdr(polAdmin), 401, protocol.KindAdminAuth},
		{"policy-admin sets an attestation policy", "POST", "/kbs/v0/attestation-policy", policyBody, bearerHdr(polAdmin), 401, protocol.KindAdminAuth},
		{"policy-admin with a query", "POST", "/kbs/v0/resource-policy?x=1", policyBody, bearerHdr(polAdmin), 404, protocol.KindInvalidPath},
		{"rv-reader registers", "POST", "/kbs/v0/reference-value", msg, bearerHdr(rvReader), 401, protocol.KindAdminAuth},
		// The reader's ACL matches any path below reference-value/, but a
		// registration there is no endpoint at all.
		{"rv-reader registers below", "POST", "/kbs/v0/reference-value/svn", msg, bearerHdr(rvReader), 404, protocol.KindInvalidPath},
		{"rv-reader sets a policy below", "POST", "/kbs/v0/resource-policy/x/y", policyBody, bearerHdr(polAdmin), 404, protocol.KindInvalidPath},
		{"policy-admin sets a repository's policy", "POST", "/kbs/v0/resource-policy/x", policyBody, bearerHdr(polAdmin), 401, protocol.KindAdminAuth},
		// The IdP with issuer and audience wants both.
		{"ES256 without iss", "POST", "/kbs/v0/resource-policy", policyBody, bearerHdr(mustAdminToken(t, ec, "admin", time.Minute)), 401, protocol.KindAdminAuth},
		{"ES256 wrong aud", "POST", "/kbs/v0/resource-policy", policyBody, bearerHdr(signJWT(t, ec, map[string]any{
			"iss": "https://idp.example", "aud": "other", "role": "admin", "exp": time.Now().Add(time.Minute).Unix()})), 401, protocol.KindAdminAuth},
		{"ES256 wrong iss", "POST", "/kbs/v0/resource-policy", policyBody, bearerHdr(signJWT(t, ec, map[string]any{
			"iss": "https://evil.example", "aud": "kbs", "role": "admin", "exp": time.Now().Add(time.Minute).Unix()})), 401, protocol.KindAdminAuth},
		{"unknown role", "POST", "/kbs/v0/resource-policy", policyBody, bearerHdr(mustAdminToken(t, ed, "root", time.Minute)), 401, protocol.KindAdminAuth},
	})
	if r := k.do(t, "GET", "/kbs/v0/reference-value/svn", nil, bearerHdr(rvReader)); r.status != 401 || r.kind() != protocol.KindRvps {
		t.Errorf("rv-reader reads: %d %s", r.status, r.body)
	}
	// The admin role of the second IdP, with its issuer and audience.
	ecAdmin := signJWT(t, ec, map[string]any{"iss": "https://idp.example", "aud": "kbs", "role": "admin",
		"sub": "alice", "exp": time.Now().Add(time.Minute).Unix()})
	if r := k.do(t, "POST", "/kbs/v0/reference-value", msg, bearerHdr(ecAdmin)); r.status != 200 {
		t.Fatalf("ES256 admin registers: %d %s", r.status, r.body)
	}
	if r := k.do(t, "GET", "/kbs/v0/reference-value/svn", nil, bearerHdr(rvReader)); string(r.body) != `["1"]` {
		t.Errorf("registered value: %s", r.body)
	}
	if r := k.do(t, "POST", "/kbs/v0/resource/default/key/x", []byte("x"), bearerHdr(mustAdminToken(t, ed, "admin", time.Minute))); r.status != 200 {
		t.Errorf("Ed25519 admin sets a resource: %d %s", r.status, r.body)
	}
}

func TestAdminModes(t *testing.T) {
	// DenyAll: no admin call passes, whatever the token.
	deny := newKBS(t, baseConfig("@DATA@", "")+"\n[admin]\nauthorization_mode = \"DenyAll\"\n")
	if deny.adminKey != nil {
		t.Error("DenyAll generated an admin key")
	}
	_, anyKey, _ := ed25519.GenerateKey(rand.Reader)
	tok := mustAdminToken(t, anyKey, AdminRole, time.Minute)
	deny.expectRefused(t, []badCase{
		{"set resource", "POST", "/kbs/v0/resource/default/key/x", []byte("x"), bearerHdr(tok), 401, protocol.KindAdminAuth},
		{"set resource without token", "POST", "/kbs/v0/resource/default/key/x", []byte("x"), nil, 401, protocol.KindAdminAuth},
		{"get policy", "GET", "/kbs/v0/resource-policy", nil, nil, 401, protocol.KindAdminAuth},
		{"reference value", "POST", "/kbs/v0/reference-value", []byte("{}"), nil, 401, protocol.KindAdminAuth},
	})
	// The protocol endpoints still work.
	if _, err := deny.newClient(t).Attest(bg); err != nil {
		t.Errorf("attest with DenyAll: %v", err)
	}

	// InsecureAllowAll (Trustee's default): anyone administers.
	open := newKBS(t, baseConfig("@DATA@", "")+"\n[admin]\nauthorization_mode = \"InsecureAllowAll\"\n")
	if r := open.do(t, "POST", "/kbs/v0/resource/default/key/x", []byte("x"), nil); r.status != 200 {
		t.Errorf("InsecureAllowAll: %d %s", r.status, r.body)
	}
}

func TestAdminConfigErrors(t *testing.T) {
	dir := t.TempDir()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(edPub)
	writePEM(t, filepath.Join(dir, "ed.pub"), "PUBLIC KEY", der)
	rsaDER := []byte("not a key")
	writePEM(t, filepath.Join(dir, "bad.pub"), "PUBLIC KEY", rsaDER)
	idp := fmt.Sprintf("[[admin.authentication.bearer_jwt.identity_providers]]\npublic_key_uri = %q\n", filepath.Join(dir, "ed.pub"))
	cases := map[string]string{
		"unknown mode":     "[admin]\nauthorization_mode = \"AllowSome\"\n",
		"no idp":           "[admin]\nauthorization_mode = \"AuthenticatedAuthorization\"\n",
		"idp without key":  "[admin]\nauthorization_mode = \"AuthenticatedAuthorization\"\n[[admin.authentication.bearer_jwt.identity_providers]]\nissuer = \"x\"\n",
		"missing key file": "[admin]\nauthorization_mode = \"AuthenticatedAuthorization\"\n[[admin.authentication.bearer_jwt.identity_providers]]\npublic_key_uri = \"/nonexistent/key.pub\"\n",
		"bad key file":     fmt.Sprintf("[admin]\nauthorization_mode = \"AuthenticatedAuthorization\"\n[[admin.authentication.bearer_jwt.identity_providers]]\npublic_key_uri = %q\n", filepath.Join(dir, "bad.pub")),
		"bad regex": "[admin]\nauthorization_mode = \"AuthenticatedAuthorization\"\n" + idp +
			"[[admin.authorization.regex_acl.acls]]\nrole = \"a\"\nallowed_endpoints = \"([\"\n",
		"unknown method": "[admin]\nauthorization_mode = \"AuthenticatedAuthorization\"\n" + idp +
			"[[admin.authorization.regex_acl.acls]]\nrole = \"a\"\nallowed_endpoints = \"^/x$\"\nallowed_methods = [\"PATCH\"]\n",
		"duplicate role": "[admin]\nauthorization_mode = \"AuthenticatedAuthorization\"\n" + idp +
			"[[admin.authorization.regex_acl.acls]]\nrole = \"a\"\nallowed_endpoints = \"^/x$\"\n" +
			"[[admin.authorization.regex_acl.acls]]\nrole = \"a\"\nallowed_endpoints = \"^/y$\"\n",
	}
	for name, extra := range cases {
		cfg, err := ParseConfig([]byte(baseConfig(t.TempDir(), "")+"\n"+extra), quietLog())
		if err != nil {
			t.Errorf("%s: ParseConfig: %v", name, err)
			continue
		}
		if srv, err := New(bg, cfg, sampleRegistry(), quietLog()); err == nil {
			srv.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestParsePublicKeyPEM(t *testing.T) {
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, k := range []any{edPub, &ec.PublicKey} {
		der, _ := x509.MarshalPKIXPublicKey(k)
		got, err := ParsePublicKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		if err != nil || got == nil {
			t.Errorf("%T: %v", k, err)
		}
	}
	rsaKey := rsaPublicDER(t)
	for name, b := range map[string][]byte{
		"empty":   nil,
		"not PEM": []byte("ssh-ed25519 AAAA"),
		"garbage": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}),
		"RSA":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaKey}),
	} {
		if _, err := ParsePublicKeyPEM(b); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

// rsaPublicDER is a fixed 2048-bit RSA public key (PKIX DER).
func rsaPublicDER(t *testing.T) []byte {
	t.Helper()
	const b64 = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmwIDAQAB"
	der, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestAdminEndpoints(t *testing.T) {
	k := newKBS(t, "")
	hdr := bearerHdr(k.adminToken(t, AdminRole, 5*time.Minute))
	post := func(path string, v any) response {
		b, _ := json.Marshal(v)
		return k.do(t, "POST", path, b, hdr)
	}
	b64u := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

	// An attestation policy that affirms the sample TEE without reference values.
	affirm := "package policy\nimport rego.v1\ntrust_claims := {\"executables\": 3, \"hardware\": 2, \"configuration\": 2}\n"
	if r := post("/kbs/v0/attestation-policy", map[string]string{"type": "rego", "policy_id": "default_cpu", "policy": b64u(affirm)}); r.status != 200 {
		t.Fatalf("set attestation policy: %d %s", r.status, r.body)
	}
	if text, _ := k.srv.builtin.Policies().Get(bg, "default_cpu"); text != affirm {
		t.Errorf("stored attestation policy %q", text)
	}
	c := k.newClient(t)
	tok, err := c.Attest(bg)
	if err != nil {
		t.Fatal(err)
	}
	claims, _, _ := k.srv.tokens.Verify(tok)
	if claims.Submods["cpu0"].Status != "affirming" {
		t.Errorf("custom attestation policy not applied: %s", claims.Submods["cpu0"].Status)
	}
	// Padded base64url and no type/policy_id work too (Trustee's defaults).
	if r := post("/kbs/v0/attestation-policy", map[string]string{"policy": base64.URLEncoding.EncodeToString([]byte(affirm + "\n"))}); r.status != 200 {
		t.Errorf("padded, defaults: %d %s", r.status, r.body)
	}

	// Resource policy round trip.
	if r := post("/kbs/v0/resource-policy", map[string]string{"policy": b64u(respolicy.Affirming)}); r.status != 200 {
		t.Fatalf("set resource policy: %d %s", r.status, r.body)
	}
	// GET answers the policies' ids, as Trustee does.
	if r := k.do(t, "GET", "/kbs/v0/resource-policy", nil, hdr); r.status != 200 ||
		string(r.body) != `["resource-policy"]`+"\n" || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("GET resource-policy: %d %q", r.status, r.body)
	}
	if text, err := k.srv.resources.policy.Get(bg, ResourcePolicyID); err != nil || text != respolicy.Affirming {
		t.Errorf("resource policy not replaced: %v", err)
	}

	// Resources: set, fetch, delete.
	if r := k.do(t, "POST", "/kbs/v0/resource/default/key/x", []byte("v1"), hdr); r.status != 200 {
		t.Fatal(r.status)
	}
	if r := k.do(t, "PUT", "/kbs/v0/resource/default/key/x", []byte("v2"), hdr); r.status != 200 {
		t.Fatal(r.status)
	}
	if v, err := c.GetResource(bg, "default/key/x"); err != nil || string(v) != "v2" {
		t.Errorf("resource: %q %v", v, err)
	}
	if r := k.do(t, "DELETE", "/kbs/v0/resource/default/key/x", nil, hdr); r.status != 200 {
		t.Fatal(r.status)
	}
	if _, err := c.GetResource(bg, "default/key/x"); !protocol.IsResourceNotFound(err) {
		t.Errorf("deleted resource: %v", err)
	}

	// Reference values.
	msg := map[string]string{"version": "0.1.0", "type": "sample", "payload": base64.StdEncoding.EncodeToString([]byte(`{"svn":["1","2"]}`))}
	if r := post("/kbs/v0/reference-value", msg); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	if r := k.do(t, "GET", "/kbs/v0/reference-value/svn", nil, hdr); string(r.body) != `["1","2"]` {
		t.Errorf("GET reference-value: %s", r.body)
	}
	if r := k.do(t, "GET", "/kbs/v0/reference-value/nothing", nil, hdr); r.status != 401 || r.kind() != protocol.KindRvps {
		t.Errorf("unknown reference value: %d %s", r.status, r.body)
	}

	// Refused inputs.
	j := func(v any) []byte { b, _ := json.Marshal(v); return b }
	pp, pe, ae, rv := protocol.KindParsePolicy, protocol.KindPolicyEngine, protocol.KindAttestation, protocol.KindRvps
	k.expectRefused(t, []badCase{
		{"policy not base64", "POST", "/kbs/v0/resource-policy", j(map[string]string{"policy": "not base64!"}), hdr, 401, pp},
		{"policy not rego", "POST", "/kbs/v0/resource-policy", j(map[string]string{"policy": b64u("allow everything")}), hdr, 401, pe},
		{"policy wrong package", "POST", "/kbs/v0/resource-policy", j(map[string]string{"policy": b64u("package kbs\ndefault allow = true\n")}), hdr, 401, pe},
		{"policy http.send", "POST", "/kbs/v0/resource-policy", j(map[string]string{"policy": b64u("package policy\nimport rego.v1\nallow if http.send({\"method\":\"get\",\"url\":\"http://x\"}).body.ok\n")}), hdr, 401, pe},
		{"policy malformed JSON", "POST", "/kbs/v0/resource-policy", []byte(`{"policy":`), hdr, 401, pp},
		{"attestation policy type", "POST", "/kbs/v0/attestation-policy", j(map[string]string{"type": "opa", "policy": b64u(affirm)}), hdr, 401, ae},
		{"attestation policy id", "POST", "/kbs/v0/attestation-policy", j(map[string]string{"policy_id": "../x", "policy": b64u(affirm)}), hdr, 401, ae},
		{"attestation policy id long", "POST", "/kbs/v0/attestation-policy", j(map[string]string{"policy_id": strings.Repeat("a", 129), "policy": b64u(affirm)}), hdr, 401, ae},
		{"attestation policy invalid", "POST", "/kbs/v0/attestation-policy", j(map[string]string{"policy": b64u("package policy\ntrust_claims := {")}), hdr, 401, ae},
		{"attestation policy trailing", "POST", "/kbs/v0/attestation-policy", append(j(map[string]string{"policy": b64u(affirm)}), "x"...), hdr, 401, ae},
		{"rv not JSON", "POST", "/kbs/v0/reference-value", []byte("svn=1"), hdr, 401, rv},
		{"rv version", "POST", "/kbs/v0/reference-value", j(map[string]string{"version": "9", "type": "sample", "payload": msg["payload"]}), hdr, 401, rv},
		{"rv type", "POST", "/kbs/v0/reference-value", j(map[string]string{"version": "0.1.0", "type": "swid", "payload": msg["payload"]}), hdr, 401, rv},
		{"rv payload", "POST", "/kbs/v0/reference-value", j(map[string]string{"version": "0.1.0", "type": "sample", "payload": "%%%"}), hdr, 401, rv},
		{"rv no id", "GET", "/kbs/v0/reference-value", nil, hdr, 401, rv},
		{"resource bad path", "POST", "/kbs/v0/resource/default/../x", []byte("x"), hdr, 404, protocol.KindInvalidPath},
		{"resource long segment", "POST", "/kbs/v0/resource/default/key/" + strings.Repeat("a", 256), []byte("x"), hdr, 401, protocol.KindPluginInternal},
		{"DELETE reference value", "DELETE", "/kbs/v0/reference-value", nil, hdr, 404, protocol.KindPluginNotFound},
		{"DELETE reference value id", "DELETE", "/kbs/v0/reference-value/svn", nil, hdr, 404, protocol.KindInvalidPath},
		{"PUT resource policy", "PUT", "/kbs/v0/resource-policy", nil, hdr, 404, protocol.KindPluginNotFound},
	})
}

func TestAuthorize(t *testing.T) {
	k := newKBS(t, "")
	req := httptest.NewRequest("POST", "/kbs/v0/resource-policy", nil)
	req.Header.Set("Authorization", "Bearer "+signJWT(t, k.adminKey, map[string]any{
		"role": "admin", "sub": "alice", "exp": time.Now().Add(time.Minute).Unix()}))
	who, err := k.srv.admin.Authorize(req)
	if err != nil || who != "admin:alice" {
		t.Errorf("Authorize = %q, %v", who, err)
	}
	// The standalone attestation service authorizes through Authorize too:
	// the same canonical path, without a query, is what its ACLs see.
	for _, target := range []string{"/policy?/kbs/v0/resource/tenantB/", "/policy/", "/x/../policy"} {
		bad := httptest.NewRequest("POST", target, nil)
		bad.Header = req.Header
		if who, err := k.srv.admin.Authorize(bad); !errors.Is(err, ErrPathNotCanonical) || who != "" {
			t.Errorf("%s: %q, %v", target, who, err)
		}
	}
	req.Header.Del("Authorization")
	if who, err := k.srv.admin.Authorize(req); !errors.Is(err, ErrAdminNoToken) || who != "" {
		t.Errorf("no token: %q, %v", who, err)
	}
}

// TestAdminTokenIssuerAudience: tokens kbs-client signs with an ECDSA
// P-384 key (ES384), with the issuer and audience the identity provider
// entry names, are accepted; without them they are refused, saying why.
func TestAdminTokenIssuerAudience(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	writePEM(t, filepath.Join(dir, "admin.pub"), "PUBLIC KEY", der)
	k := newKBS(t, baseConfig(dir, fmt.Sprintf(`
[admin]
authorization_mode = "AuthenticatedAuthorization"
[admin.authentication.bearer_jwt]
identity_providers = [{ issuer = "ops", audience = "kbs", public_key_uri = "%s/admin.pub" }]
[admin.authorization.regex_acl]
acls = [{ role = "admin", allowed_endpoints = "^/kbs/v0/.+$" }]
`, dir)))
	admin := func(c client.TokenClaims) *client.Admin {
		return client.NewAdminSigning(k.ts.URL, k.ts.Client(), key, c)
	}
	if err := admin(client.TokenClaims{Role: AdminRole, Issuer: "ops", Audience: "kbs"}).SetResource(bg, "default/key/x", []byte("x")); err != nil {
		t.Fatalf("ES384 token with issuer and audience: %v", err)
	}
	for name, c := range map[string]client.TokenClaims{
		"no issuer":      {Role: AdminRole, Audience: "kbs"},
		"other issuer":   {Role: AdminRole, Issuer: "dev", Audience: "kbs"},
		"no audience":    {Role: AdminRole, Issuer: "ops"},
		"other audience": {Role: AdminRole, Issuer: "ops", Audience: "as"},
	} {
		err := admin(c).SetResource(bg, "default/key/x", []byte("y"))
		var kerr *protocol.Error
		if !errors.As(err, &kerr) || kerr.Kind != protocol.KindAdminAuth {
			t.Errorf("%s: %v", name, err)
		} else if want := map[bool]string{true: `issuer "ops"`, false: `audience "kbs"`}[strings.Contains(name, "issuer")]; !strings.Contains(kerr.Detail, want) {
			t.Errorf("%s: %q does not say what is expected (%s)", name, kerr.Detail, want)
		}
	}
	if v, _ := k.srv.resources.store.Get(bg, ResourceNamespace, "default/key/x"); string(v) != "x" {
		t.Errorf("resource %q", v)
	}
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if _, err := client.SignToken(p521, client.TokenClaims{Role: AdminRole}, time.Minute); err == nil {
		t.Error("a P-521 key signed a token the KBS cannot verify")
	}
}
