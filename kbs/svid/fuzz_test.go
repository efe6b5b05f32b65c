package svid

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"testing"

	"github.com/cocoon-cc/cocoon/protocol"
)

// FuzzParseRequest: any payload is a request of its kind or a typed
// refusal, never a panic; an accepted X.509 request has a CSR signed by
// its own key.
func FuzzParseRequest(f *testing.F) {
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, newKey(f))
	f.Add(protocol.SVIDTypeX509, []byte(mustJSON(protocol.SVIDRequest{Nonce: "n", CSR: csr})))
	f.Add(protocol.SVIDTypeJWT, []byte(`{"nonce":"n","audience":["a","b"]}`))
	f.Add(protocol.SVIDTypeJWT, []byte(`{"nonce":"","csr":"AAAA"}`))
	f.Add("x", []byte(`null`))
	f.Fuzz(func(t *testing.T, typ string, payload []byte) {
		req, parsed, err := ParseRequest(typ, payload)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if req.Nonce == "" {
			t.Fatal("accepted without nonce")
		}
		if typ == protocol.SVIDTypeX509 && (parsed == nil || parsed.CheckSignature() != nil) {
			t.Fatal("accepted an X.509 request without a valid CSR")
		}
	})
}

// FuzzIDFromClaims: any init_data_claims give an ID of the trust domain
// with a path, or a typed refusal.
func FuzzIDFromClaims(f *testing.F) {
	f.Add(`{"spiffe.toml":"id = \"/ns/a\""}`)
	f.Add(`{"spiffe.toml":{"id":"spiffe://example.org/a"}}`)
	f.Add(`{"spiffe.toml":"id = \"spiffe://other.org/a\""}`)
	f.Add(`{"spiffe.toml":"id = '/%2e%2e'"}`)
	f.Fuzz(func(t *testing.T, claims string) {
		if !json.Valid([]byte(claims)) {
			return
		}
		id, err := IDFromClaims(td, claimsWith(claims))
		if err != nil {
			if !errors.Is(err, ErrNoID) && !errors.Is(err, ErrBadID) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if id.TrustDomain() != td || id.Path() == "" {
			t.Fatalf("accepted %s", id)
		}
	})
}
