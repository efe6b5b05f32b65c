package ear_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/cocoon-cc/cocoon/attestation/ear"
)

func TestTierOf(t *testing.T) {
	cases := map[int]ear.Status{
		0: ear.StatusNone, 1: ear.StatusNone, -1: ear.StatusNone,
		2: ear.StatusAffirming, 3: ear.StatusAffirming, 31: ear.StatusAffirming, -2: ear.StatusAffirming, -31: ear.StatusAffirming,
		32: ear.StatusWarning, 33: ear.StatusWarning, 36: ear.StatusWarning, 95: ear.StatusWarning, -32: ear.StatusWarning, -95: ear.StatusWarning,
		96: ear.StatusContraindicated, 97: ear.StatusContraindicated, 99: ear.StatusContraindicated, 127: ear.StatusContraindicated,
		-96: ear.StatusContraindicated, -128: ear.StatusContraindicated, 1000: ear.StatusContraindicated,
	}
	for v, want := range cases {
		if got := ear.TierOf(v); got != want {
			t.Errorf("TierOf(%d) = %s, want %s", v, got, want)
		}
	}
}

var claimNames = []string{"instance-identity", "configuration", "executables", "file-system",
	"hardware", "runtime-opaque", "storage-opaque", "sourced-data"}

func TestTrustVectorStatus(t *testing.T) {
	var zero ear.TrustVector
	if zero.Status() != ear.StatusNone || zero.AnySet() {
		t.Errorf("zero vector: %s, AnySet %v", zero.Status(), zero.AnySet())
	}
	// Every claim counts: one bad claim anywhere makes the whole worse.
	for _, name := range claimNames {
		for v, want := range map[int]ear.Status{1: ear.StatusNone, 2: ear.StatusAffirming, 32: ear.StatusWarning, 96: ear.StatusContraindicated} {
			var tv ear.TrustVector
			if !tv.Set(name, v) {
				t.Fatalf("Set(%q) refused", name)
			}
			if !tv.AnySet() {
				t.Errorf("%s=%d: AnySet false", name, v)
			}
			if got := tv.Status(); got != want {
				t.Errorf("only %s=%d: status %s, want %s", name, v, got, want)
			}
		}
	}
	worst := []struct {
		vals map[string]int
		want ear.Status
	}{
		{map[string]int{"executables": 3, "hardware": 2, "configuration": 2}, ear.StatusAffirming},
		{map[string]int{"executables": 33, "hardware": 97, "configuration": 36}, ear.StatusContraindicated},
		{map[string]int{"executables": 3, "hardware": 2, "configuration": 36}, ear.StatusWarning},
		{map[string]int{"executables": 3, "hardware": 2, "configuration": 1}, ear.StatusAffirming},
		{map[string]int{"executables": 1, "hardware": -1}, ear.StatusNone},
		{map[string]int{"executables": 2, "sourced-data": -99}, ear.StatusContraindicated},
		{map[string]int{"file-system": 32, "storage-opaque": 95, "runtime-opaque": 2}, ear.StatusWarning},
	}
	for _, c := range worst {
		var tv ear.TrustVector
		for k, v := range c.vals {
			tv.Set(k, v)
		}
		if got := tv.Status(); got != c.want {
			t.Errorf("%v: status %s, want %s", c.vals, got, c.want)
		}
	}
	var tv ear.TrustVector
	for _, bad := range []string{"", "Executables", "executable", "file_system", "ear.status"} {
		if tv.Set(bad, 2) {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	if tv.AnySet() {
		t.Error("a refused Set changed the vector")
	}
	// The JSON names are AR4SI's.
	for i, name := range claimNames {
		tv.Set(name, i+2)
	}
	b, _ := json.Marshal(tv)
	want := `{"instance-identity":2,"configuration":3,"executables":4,"file-system":5,"hardware":6,"runtime-opaque":7,"storage-opaque":8,"sourced-data":9}`
	if string(b) != want {
		t.Errorf("vector JSON %s, want %s", b, want)
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newSigner(t testing.TB, k *ecdsa.PrivateKey) *ear.Signer {
	t.Helper()
	s, err := ear.NewSigner(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var base = time.Unix(1_700_000_000, 0)

func sampleClaims(now time.Time) *ear.Claims {
	var tv ear.TrustVector
	tv.Set("executables", 3)
	tv.Set("hardware", 2)
	tv.Set("configuration", 2)
	return &ear.Claims{
		Profile:    ear.Profile,
		IssuedAt:   now.Unix(),
		Expiry:     now.Add(5 * time.Minute).Unix(),
		Issuer:     "test-issuer",
		VerifierID: ear.VerifierID{Developer: "dev", Build: "build"},
		Submods: map[string]ear.Appraisal{"cpu0": {
			Status: tv.Status(), TrustVector: tv, PolicyID: "default",
			AnnotatedEvidence: map[string]json.RawMessage{
				"sample":              json.RawMessage(`{"svn":"1"}`),
				"runtime_data_claims": json.RawMessage(`{"nonce":"n","tee-pubkey":{"kty":"EC"}}`),
			},
		}},
	}
}

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestSignVerifyRoundTrip(t *testing.T) {
	k := newKey(t)
	s := newSigner(t, k)
	c := sampleClaims(base)
	tok, err := s.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	v := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{s.Public()}, Now: at(base.Add(time.Minute))})
	got, raw, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(c)
	if string(gb) != string(wb) {
		t.Errorf("claims\n%s\nwant\n%s", gb, wb)
	}
	if got.Submods["cpu0"].Status != ear.StatusAffirming {
		t.Errorf("status %s", got.Submods["cpu0"].Status)
	}
	// The raw claims are plain JSON values (the resource policy's input).
	sub := raw["submods"].(map[string]any)["cpu0"].(map[string]any)
	if sub["ear.status"] != "affirming" || raw["eat_profile"] != ear.Profile || raw["iss"] != "test-issuer" {
		t.Errorf("raw claims %v", raw)
	}
	pk := sub["ear.veraison.annotated-evidence"].(map[string]any)["runtime_data_claims"].(map[string]any)["tee-pubkey"]
	if pk.(map[string]any)["kty"] != "EC" {
		t.Errorf("raw tee-pubkey %v", pk)
	}
	// At the boundaries: exactly exp, exactly iat.
	for _, now := range []time.Time{base, base.Add(5 * time.Minute)} {
		v := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{s.Public()}, Now: at(now)})
		if _, _, err := v.Verify(tok); err != nil {
			t.Errorf("at %v: %v", now.Sub(base), err)
		}
	}
	// A nil clock is the real one: a token issued now verifies.
	now := sampleClaims(time.Now())
	tok2, _ := s.Sign(now)
	if _, _, err := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{s.Public()}}).Verify(tok2); err != nil {
		t.Errorf("default clock: %v", err)
	}
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestHeader(t *testing.T) {
	k := newKey(t)
	s := newSigner(t, k)
	tok, _ := s.Sign(sampleClaims(base))
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%d parts", len(parts))
	}
	var hdr struct {
		Alg string         `json:"alg"`
		Typ string         `json:"typ"`
		JWK map[string]any `json:"jwk"`
	}
	decodeSegment(t, parts[0], &hdr)
	if hdr.Alg != "ES256" || hdr.Typ != "JWT" {
		t.Errorf("header alg %q typ %q", hdr.Alg, hdr.Typ)
	}
	if hdr.JWK["kty"] != "EC" || hdr.JWK["crv"] != "P-256" {
		t.Errorf("header jwk %v", hdr.JWK)
	}
	if _, ok := hdr.JWK["d"]; ok {
		t.Fatal("header jwk carries the private key")
	}
	x, _ := base64.RawURLEncoding.DecodeString(hdr.JWK["x"].(string))
	y, _ := base64.RawURLEncoding.DecodeString(hdr.JWK["y"].(string))
	if new(big.Int).SetBytes(x).Cmp(k.X) != 0 || new(big.Int).SetBytes(y).Cmp(k.Y) != 0 {
		t.Error("header jwk is not the signing key")
	}
	if _, ok := hdr.JWK["x5c"]; ok {
		t.Error("x5c without a chain")
	}
	pub := s.Public()
	if !pub.IsPublic() || pub.Algorithm != "ES256" {
		t.Errorf("Public() = %+v", pub)
	}
	// The signature is raw r||s, 64 bytes.
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if len(sig) != 64 {
		t.Errorf("signature of %d bytes", len(sig))
	}
}

// TestVerifyJWX checks the token with lestrrat-go/jwx, which shares no code
// with the signer's go-jose.
func TestVerifyJWX(t *testing.T) {
	k := newKey(t)
	s := newSigner(t, k)
	now := time.Now()
	tok, _ := s.Sign(sampleClaims(now))
	pubJSON, err := json.Marshal(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	key, err := jwk.ParseKey(pubJSON)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify([]byte(tok), jws.WithKey(jwa.ES256(), key))
	if err != nil {
		t.Fatalf("jws.Verify: %v", err)
	}
	var c ear.Claims
	if err := json.Unmarshal(payload, &c); err != nil || c.Profile != ear.Profile {
		t.Fatalf("payload %s: %v", payload, err)
	}
	parsed, err := jwt.Parse([]byte(tok), jwt.WithKey(jwa.ES256(), key), jwt.WithValidate(true))
	if err != nil {
		t.Fatalf("jwt.Parse: %v", err)
	}
	if iss, _ := parsed.Issuer(); iss != "test-issuer" {
		t.Errorf("issuer %q", iss)
	}
	if exp, _ := parsed.Expiration(); exp.Unix() != now.Add(5*time.Minute).Unix() {
		t.Errorf("exp %v", exp)
	}
	// The key in the header is the one jwx verifies with too.
	msg, err := jws.Parse([]byte(tok))
	if err != nil {
		t.Fatal(err)
	}
	hk, ok := msg.Signatures()[0].ProtectedHeaders().JWK()
	if !ok {
		t.Fatal("jwx finds no jwk header")
	}
	if _, err := jws.Verify([]byte(tok), jws.WithKey(jwa.ES256(), hk)); err != nil {
		t.Errorf("verify with the header jwk: %v", err)
	}
	// And another key does not verify it.
	other, _ := jwk.Import(&newKey(t).PublicKey)
	if _, err := jws.Verify([]byte(tok), jws.WithKey(jwa.ES256(), other)); err == nil {
		t.Error("jwx verified with another key")
	}
}

func TestValidity(t *testing.T) {
	s := newSigner(t, newKey(t))
	tok, _ := s.Sign(sampleClaims(base)) // iat base, exp base+5m
	keys := []gojose.JSONWebKey{s.Public()}
	cases := []struct {
		now    time.Time
		leeway time.Duration
		want   error
	}{
		{base.Add(5*time.Minute + time.Second), 0, ear.ErrExpired},
		{base.Add(time.Hour), 30 * time.Second, ear.ErrExpired},
		{base.Add(5*time.Minute + 20*time.Second), 30 * time.Second, nil},
		{base.Add(-time.Second), 0, ear.ErrNotYetValid},
		{base.Add(-time.Hour), 30 * time.Second, ear.ErrNotYetValid},
		{base.Add(-20 * time.Second), 30 * time.Second, nil},
	}
	for _, c := range cases {
		v := ear.NewVerifier(ear.VerifierOptions{Keys: keys, Now: at(c.now), Leeway: c.leeway})
		got, raw, err := v.Verify(tok)
		if !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
			t.Errorf("now %v leeway %v: %v, want %v", c.now.Sub(base), c.leeway, err, c.want)
		}
		if err != nil && (got != nil || raw != nil) {
			t.Error("claims returned with an error")
		}
	}
	// No exp at all is expired.
	c := sampleClaims(base)
	c.Expiry = 0
	tok, _ = s.Sign(c)
	if _, _, err := ear.NewVerifier(ear.VerifierOptions{Keys: keys, Now: at(base)}).Verify(tok); !errors.Is(err, ear.ErrExpired) {
		t.Errorf("no exp: %v, want ErrExpired", err)
	}
}

func TestUntrustedKey(t *testing.T) {
	ours := newSigner(t, newKey(t))
	theirs := newSigner(t, newKey(t))
	tok, _ := theirs.Sign(sampleClaims(base))
	v := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{ours.Public()}, Now: at(base)})
	if _, _, err := v.Verify(tok); !errors.Is(err, ear.ErrUntrustedKey) {
		t.Errorf("foreign key: %v, want ErrUntrustedKey", err)
	}
	// Nothing trusted at all.
	if _, _, err := ear.NewVerifier(ear.VerifierOptions{Now: at(base)}).Verify(tok); !errors.Is(err, ear.ErrUntrustedKey) {
		t.Errorf("no keys: %v, want ErrUntrustedKey", err)
	}
	// InsecureHeaderJWK trusts whatever key the header carries.
	iv := ear.NewVerifier(ear.VerifierOptions{InsecureHeaderJWK: true, Now: at(base)})
	if c, _, err := iv.Verify(tok); err != nil || c.Issuer != "test-issuer" {
		t.Errorf("InsecureHeaderJWK: %v", err)
	}
	// ...but still checks the signature against it.
	if _, _, err := iv.Verify(flipSignature(tok)); !errors.Is(err, ear.ErrBadSignature) {
		t.Errorf("InsecureHeaderJWK, flipped signature: %v, want ErrBadSignature", err)
	}
}

func flipSignature(tok string) string {
	parts := strings.Split(tok, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[10] ^= 0x40
	parts[2] = base64.RawURLEncoding.EncodeToString(sig)
	return strings.Join(parts, ".")
}

func TestBadSignature(t *testing.T) {
	s := newSigner(t, newKey(t))
	tok, _ := s.Sign(sampleClaims(base))
	v := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{s.Public()}, Now: at(base)})
	if _, _, err := v.Verify(flipSignature(tok)); !errors.Is(err, ear.ErrBadSignature) {
		t.Errorf("flipped signature: %v, want ErrBadSignature", err)
	}
	// A changed payload under the original signature.
	parts := strings.Split(tok, ".")
	var body map[string]any
	decodeSegment(t, parts[1], &body)
	body["iss"] = "mallory"
	b, _ := json.Marshal(body)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	if _, _, err := v.Verify(strings.Join(parts, ".")); !errors.Is(err, ear.ErrBadSignature) {
		t.Errorf("changed payload: %v, want ErrBadSignature", err)
	}
}

// rawToken builds a compact JWS by hand, signing with k (ES256) unless the
// signature is given.
func rawToken(t *testing.T, header map[string]any, payload []byte, k *ecdsa.PrivateKey, sig []byte) string {
	t.Helper()
	hb, _ := json.Marshal(header)
	in := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(payload)
	if sig == nil && k != nil {
		h := sha256.Sum256([]byte(in))
		r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestMalformed(t *testing.T) {
	k := newKey(t)
	s := newSigner(t, k)
	v := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{s.Public()}, Now: at(base)})
	good, _ := json.Marshal(sampleClaims(base))
	es256 := map[string]any{"alg": "ES256", "typ": "JWT"}
	cases := map[string]string{
		"empty":              "",
		"one part":           "abc",
		"two parts":          "a.b",
		"four parts":         "a.b.c.d",
		"JWE compact":        "a.b.c.d.e",
		"dots only":          "..",
		"bad base64":         "!!!.@@@.###",
		"header not JSON":    base64.RawURLEncoding.EncodeToString([]byte("hdr")) + ".e30.AAAA",
		"alg none":           rawToken(t, map[string]any{"alg": "none"}, good, nil, []byte{}),
		"alg HS256":          rawToken(t, map[string]any{"alg": "HS256"}, good, nil, make([]byte, 32)),
		"alg ES384":          rawToken(t, map[string]any{"alg": "ES384"}, good, nil, make([]byte, 96)),
		"payload not JSON":   rawToken(t, es256, []byte("not json"), k, nil),
		"payload array":      rawToken(t, es256, []byte(`[1,2]`), k, nil),
		"payload bad type":   rawToken(t, es256, []byte(`{"iat":"yesterday","exp":1}`), k, nil),
		"submods bad type":   rawToken(t, es256, []byte(`{"iat":1,"exp":99999999999,"submods":[]}`), k, nil),
		"JSON serialization": `{"payload":"e30","protected":"eyJhbGciOiJFUzI1NiJ9","signature":"AAAA"}`,
	}
	for name, tok := range cases {
		if c, raw, err := v.Verify(tok); !errors.Is(err, ear.ErrMalformedToken) {
			t.Errorf("%s: Verify = %v, %v, %v; want ErrMalformedToken", name, c, raw, err)
		}
	}
	// A hand-built token signed by the trusted key, without a header jwk,
	// is accepted through the configured keys.
	if _, _, err := v.Verify(rawToken(t, es256, good, k, nil)); err != nil {
		t.Errorf("hand-built token: %v", err)
	}
}

func TestConfiguredKeysWithoutHeaderJWK(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	s1, s2 := newSigner(t, k1), newSigner(t, k2)
	p1, p2 := s1.Public(), s2.Public()
	p1.KeyID, p2.KeyID = "one", "two"
	good, _ := json.Marshal(sampleClaims(base))
	v := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{p1, p2}, Now: at(base)})
	// Either key, with or without a matching kid.
	for _, tc := range []struct {
		hdr map[string]any
		k   *ecdsa.PrivateKey
		ok  bool
	}{
		{map[string]any{"alg": "ES256"}, k1, true},
		{map[string]any{"alg": "ES256"}, k2, true},
		{map[string]any{"alg": "ES256", "kid": "two"}, k2, true},
		{map[string]any{"alg": "ES256", "kid": "one"}, k2, false}, // kid names the other key
		{map[string]any{"alg": "ES256", "kid": "three"}, k1, false},
		{map[string]any{"alg": "ES256"}, newKey(t), false},
	} {
		_, _, err := v.Verify(rawToken(t, tc.hdr, good, tc.k, nil))
		if tc.ok && err != nil {
			t.Errorf("%v: %v", tc.hdr, err)
		}
		if !tc.ok && !errors.Is(err, ear.ErrUntrustedKey) {
			t.Errorf("%v: %v, want ErrUntrustedKey", tc.hdr, err)
		}
	}
}

func TestNewSignerRefusesOtherCurves(t *testing.T) {
	for _, c := range []elliptic.Curve{elliptic.P384(), elliptic.P521(), elliptic.P224()} {
		k, _ := ecdsa.GenerateKey(c, rand.Reader)
		if _, err := ear.NewSigner(k, nil); err == nil {
			t.Errorf("NewSigner accepted a %s key", c.Params().Name)
		}
	}
}

// testCA is a root and an intermediate CA issuing a leaf for the signing key.
type testCA struct {
	root, inter, leaf *x509.Certificate
}

func newCert(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, pub any, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func makeCA(t *testing.T, leafKey *ecdsa.PrivateKey, notAfter time.Time) testCA {
	rootKey, interKey := newKey(t), newKey(t)
	ca := func(serial int64, cn string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: base.Add(-24 * time.Hour), NotAfter: base.Add(365 * 24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	}
	root := newCert(t, ca(1, "test root"), nil, &rootKey.PublicKey, rootKey)
	inter := newCert(t, ca(2, "test intermediate"), root, &interKey.PublicKey, rootKey)
	leaf := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "token signer"},
		NotBefore: base.Add(-time.Hour), NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature},
		inter, &leafKey.PublicKey, interKey)
	return testCA{root: root, inter: inter, leaf: leaf}
}

func TestX5CChain(t *testing.T) {
	k := newKey(t)
	ca := makeCA(t, k, base.Add(30*24*time.Hour))
	s, err := ear.NewSigner(k, []*x509.Certificate{ca.leaf, ca.inter})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.Sign(sampleClaims(base))
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct {
		JWK struct {
			X5C []string `json:"x5c"`
		} `json:"jwk"`
	}
	decodeSegment(t, strings.Split(tok, ".")[0], &hdr)
	if len(hdr.JWK.X5C) != 2 {
		t.Fatalf("x5c of %d certificates", len(hdr.JWK.X5C))
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.root)
	v := ear.NewVerifier(ear.VerifierOptions{Roots: roots, Now: at(base)})
	if _, _, err := v.Verify(tok); err != nil {
		t.Fatalf("x5c chain to a trusted root: %v", err)
	}
	// Another root: refused.
	other := makeCA(t, k, base.Add(time.Hour))
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(other.root)
	if _, _, err := ear.NewVerifier(ear.VerifierOptions{Roots: otherRoots, Now: at(base)}).Verify(tok); !errors.Is(err, ear.ErrUntrustedKey) {
		t.Errorf("other root: %v, want ErrUntrustedKey", err)
	}
	// No roots configured: the chain alone proves nothing.
	if _, _, err := ear.NewVerifier(ear.VerifierOptions{Now: at(base)}).Verify(tok); !errors.Is(err, ear.ErrUntrustedKey) {
		t.Errorf("no roots: %v, want ErrUntrustedKey", err)
	}
	// The intermediate missing from x5c: the chain does not build.
	s2, _ := ear.NewSigner(k, []*x509.Certificate{ca.leaf})
	tok2, _ := s2.Sign(sampleClaims(base))
	if _, _, err := v.Verify(tok2); !errors.Is(err, ear.ErrUntrustedKey) {
		t.Errorf("leaf only: %v, want ErrUntrustedKey", err)
	}
	// The leaf expired by the time of verification (the token itself not).
	short := makeCA(t, k, base.Add(time.Minute))
	shortRoots := x509.NewCertPool()
	shortRoots.AddCert(short.root)
	s3, _ := ear.NewSigner(k, []*x509.Certificate{short.leaf, short.inter})
	tok3, _ := s3.Sign(sampleClaims(base.Add(2 * time.Minute)))
	if _, _, err := ear.NewVerifier(ear.VerifierOptions{Roots: shortRoots, Now: at(base.Add(2 * time.Minute))}).Verify(tok3); !errors.Is(err, ear.ErrUntrustedKey) {
		t.Errorf("expired leaf: %v, want ErrUntrustedKey", err)
	}
}

func TestX5CLeafForAnotherKey(t *testing.T) {
	// A token signed by a key the chain does not certify, carrying the
	// certified key's chain: go-jose refuses a jwk whose x5c leaf differs
	// from it, and the verifier must not trust it either way.
	certified, attacker := newKey(t), newKey(t)
	ca := makeCA(t, certified, base.Add(time.Hour))
	roots := x509.NewCertPool()
	roots.AddCert(ca.root)
	x5c := []string{base64.StdEncoding.EncodeToString(ca.leaf.Raw), base64.StdEncoding.EncodeToString(ca.inter.Raw)}
	jwkOf := func(k *ecdsa.PrivateKey) map[string]any {
		b, _ := json.Marshal(gojose.JSONWebKey{Key: &k.PublicKey})
		var m map[string]any
		json.Unmarshal(b, &m)
		m["x5c"] = x5c
		return m
	}
	good, _ := json.Marshal(sampleClaims(base))
	tok := rawToken(t, map[string]any{"alg": "ES256", "jwk": jwkOf(attacker)}, good, attacker, nil)
	v := ear.NewVerifier(ear.VerifierOptions{Roots: roots, Now: at(base)})
	if _, _, err := v.Verify(tok); err == nil {
		t.Fatal("token of an uncertified key accepted")
	} else if !errors.Is(err, ear.ErrMalformedToken) && !errors.Is(err, ear.ErrUntrustedKey) {
		t.Errorf("error %v", err)
	}
	// The same chain with the certified key verifies.
	tok = rawToken(t, map[string]any{"alg": "ES256", "jwk": jwkOf(certified)}, good, certified, nil)
	if _, _, err := v.Verify(tok); err != nil {
		t.Errorf("certified key: %v", err)
	}
}

// mutableClock is a clock the test moves.
type mutableClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *mutableClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *mutableClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// TestCachedTokensStillExpire: a verified token is remembered, but its
// validity period is checked on every use.
func TestCachedTokensStillExpire(t *testing.T) {
	s := newSigner(t, newKey(t))
	tok, _ := s.Sign(sampleClaims(base))
	clk := &mutableClock{t: base}
	v := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{s.Public()}, Now: clk.now})
	if _, _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
	clk.set(base.Add(6 * time.Minute))
	if _, _, err := v.Verify(tok); !errors.Is(err, ear.ErrExpired) {
		t.Errorf("cached token after exp: %v, want ErrExpired", err)
	}
	clk.set(base.Add(-time.Minute))
	if _, _, err := v.Verify(tok); !errors.Is(err, ear.ErrNotYetValid) {
		t.Errorf("cached token before iat: %v, want ErrNotYetValid", err)
	}
	// A failed verification is not remembered as a success.
	clk.set(base)
	bad := flipSignature(tok)
	for range 2 {
		if _, _, err := v.Verify(bad); !errors.Is(err, ear.ErrBadSignature) {
			t.Errorf("flipped signature: %v", err)
		}
	}
}

func TestRemember(t *testing.T) {
	s := newSigner(t, newKey(t))
	clk := &mutableClock{t: base}
	v := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{s.Public()}, Now: clk.now})
	c := sampleClaims(base)
	tok, _ := s.Sign(c)
	v.Remember(tok, c)
	got, raw, err := v.Verify(tok)
	if err != nil || got.Issuer != "test-issuer" {
		t.Fatalf("remembered token: %v", err)
	}
	if raw["submods"].(map[string]any)["cpu0"].(map[string]any)["ear.status"] != "affirming" {
		t.Errorf("raw claims of a remembered token: %v", raw)
	}
	clk.set(base.Add(time.Hour))
	if _, _, err := v.Verify(tok); !errors.Is(err, ear.ErrExpired) {
		t.Errorf("remembered token after exp: %v", err)
	}
	// Many tokens: the cache stays usable and the newest is served.
	clk.set(base)
	var last string
	for i := range 5000 {
		c := sampleClaims(base)
		c.Issuer = fmt.Sprint("issuer-", i)
		last, _ = s.Sign(c)
		v.Remember(last, c)
	}
	if got, _, err := v.Verify(last); err != nil || got.Issuer != "issuer-4999" {
		t.Errorf("newest token: %v", err)
	}
	// An evicted token still verifies by its signature.
	if _, _, err := v.Verify(tok); err != nil {
		t.Errorf("first token: %v", err)
	}
}

func TestConcurrentVerify(t *testing.T) {
	s := newSigner(t, newKey(t))
	v := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{s.Public()}, Now: at(base)})
	toks := make([]string, 8)
	for i := range toks {
		c := sampleClaims(base)
		c.Issuer = fmt.Sprint(i)
		toks[i], _ = s.Sign(c)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				n := (g + i) % len(toks)
				c, _, err := v.Verify(toks[n])
				if err != nil || c.Issuer != fmt.Sprint(n) {
					errs <- fmt.Errorf("token %d: %v %v", n, c, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestClaimsMap: the claims' map is what decoding the token payload gives,
// so a remembered token and a verified one are the same policy input.
func TestClaimsMap(t *testing.T) {
	for _, c := range []*ear.Claims{sampleClaims(base), {Submods: map[string]ear.Appraisal{"gpu0": {Status: ear.StatusNone}}}} {
		b, _ := json.Marshal(c)
		var want any
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		mb, err := json.Marshal(c.Map())
		if err != nil {
			t.Fatal(err)
		}
		var got any
		if err := json.Unmarshal(mb, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("map\n%s\nwant\n%s", mb, b)
		}
	}
}
