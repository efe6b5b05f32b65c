package svid

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/protocol"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func claimsWith(initClaims string) *ear.Claims {
	ae := map[string]json.RawMessage{}
	if initClaims != "" {
		ae["init_data_claims"] = json.RawMessage(initClaims)
	}
	return &ear.Claims{Submods: map[string]ear.Appraisal{"cpu0": {AnnotatedEvidence: ae}}}
}

func TestIDFromClaims(t *testing.T) {
	for _, tc := range []struct {
		claims string
		want   string
		err    error
	}{
		{`{"spiffe.toml":"id = \"/ns/a/sa/b\""}`, "spiffe://example.org/ns/a/sa/b", nil},
		{`{"spiffe.toml":"id = \"spiffe://example.org/x\""}`, "spiffe://example.org/x", nil},
		{`{"spiffe.toml":{"id":"/parsed"}}`, "spiffe://example.org/parsed", nil},
		{`{"spiffe.toml":"id = \"spiffe://other.org/x\""}`, "", ErrBadID},
		{`{"spiffe.toml":"id = \"spiffe://example.org\""}`, "", ErrBadID},
		{`{"spiffe.toml":"id = \"/a/../b\""}`, "", ErrBadID},
		{`{"spiffe.toml":"id = 3"}`, "", ErrBadID},
		{`{"spiffe.toml":"not toml"}`, "", ErrBadID},
		{`{"spiffe.toml":"other = \"/x\""}`, "", ErrBadID},
		{`{"cdh.toml":{}}`, "", ErrNoID},
		{`[]`, "", ErrNoID},
		{``, "", ErrNoID},
	} {
		id, err := IDFromClaims(td, claimsWith(tc.claims))
		if !errors.Is(err, tc.err) || (err == nil && id.String() != tc.want) {
			t.Errorf("%s: %v %v, want %s %v", tc.claims, id, err, tc.want, tc.err)
		}
	}
	if _, err := IDFromClaims(td, &ear.Claims{}); !errors.Is(err, ErrNoID) {
		t.Errorf("no cpu0: %v", err)
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestCA: a CA refuses a certificate that is not its key's or not a CA's,
// and never issues an SVID that outlives it.
func TestCA(t *testing.T) {
	key := newKey(t)
	now := time.Now()
	root, err := GenerateRoot(td, key, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewCA(td, newKey(t), []*x509.Certificate{root}, Options{}); !errors.Is(err, ErrCA) {
		t.Errorf("another key: %v", err)
	}
	leaf := *root
	leaf.IsCA = false
	if _, err := NewCA(td, key, []*x509.Certificate{&leaf}, Options{}); !errors.Is(err, ErrCA) {
		t.Errorf("not a CA: %v", err)
	}
	ca, err := NewCA(td, key, []*x509.Certificate{root}, Options{X509TTL: 20 * 365 * 24 * time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(td, "/w")
	chain, exp, err := ca.IssueX509(id, &newKey(t).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(root.NotAfter) || len(chain) != 1 {
		t.Errorf("SVID expires %v, CA %v; chain of %d", exp, root.NotAfter, len(chain))
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, _, err := ca.IssueX509(id, pub); !errors.Is(err, ErrBadRequest) {
		t.Errorf("Ed25519 SVID key: %v", err)
	}
}

func TestParseRequest(t *testing.T) {
	key := newKey(t)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	bad := append([]byte{}, csr...)
	bad[len(bad)-3] ^= 1
	for _, tc := range []struct {
		typ, payload string
		ok           bool
	}{
		{protocol.SVIDTypeX509, mustJSON(protocol.SVIDRequest{Nonce: "n", CSR: csr}), true},
		{protocol.SVIDTypeJWT, `{"nonce":"n","audience":["a"]}`, true},
		{protocol.SVIDTypeX509, mustJSON(protocol.SVIDRequest{CSR: csr}), false},
		{protocol.SVIDTypeX509, mustJSON(protocol.SVIDRequest{Nonce: "n", CSR: bad}), false},
		{protocol.SVIDTypeX509, mustJSON(protocol.SVIDRequest{Nonce: "n", CSR: csr, Audience: []string{"a"}}), false},
		{protocol.SVIDTypeJWT, mustJSON(protocol.SVIDRequest{Nonce: "n", CSR: csr, Audience: []string{"a"}}), false},
		{protocol.SVIDTypeJWT, `{"nonce":"n","audience":[""]}`, false},
		{protocol.SVIDTypeJWT, `{"nonce":"n","audience":["a"],"x":1}`, false},
		{protocol.SVIDTypeJWT, `{"nonce":"n","audience":["a"]} {}`, false},
		{"other", `{"nonce":"n"}`, false},
	} {
		_, _, err := ParseRequest(tc.typ, []byte(tc.payload))
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadRequest)) {
			t.Errorf("%s %s: %v", tc.typ, tc.payload, err)
		}
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
