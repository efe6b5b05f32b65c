package ear_test

import (
	"errors"
	"testing"

	gojose "github.com/go-jose/go-jose/v4"

	"github.com/cocoon-cc/cocoon/attestation/ear"
)

// FuzzVerify feeds arbitrary token strings to the verifier, with and
// without InsecureHeaderJWK: never a panic, only the typed errors, and
// nothing but the seed's own token verifies under the trusted key.
func FuzzVerify(f *testing.F) {
	k := newKey(f)
	s := newSigner(f, k)
	tok, err := s.Sign(sampleClaims(base))
	if err != nil {
		f.Fatal(err)
	}
	foreign, _ := newSigner(f, newKey(f)).Sign(sampleClaims(base))
	f.Add(tok)
	f.Add(foreign)
	f.Add(flipSignature(tok))
	f.Add("")
	f.Add("..")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("eyJhbGciOiJFUzI1NiIsImp3ayI6eyJrdHkiOiJFQyIsImNydiI6IlAtMjU2IiwieCI6IkFBIiwieSI6IkFBIn19.e30.AAAA")
	trusted := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{s.Public()}, Now: at(base)})
	insecure := ear.NewVerifier(ear.VerifierOptions{InsecureHeaderJWK: true, Now: at(base)})
	typed := []error{ear.ErrMalformedToken, ear.ErrUntrustedKey, ear.ErrBadSignature, ear.ErrExpired, ear.ErrNotYetValid}
	f.Fuzz(func(t *testing.T, token string) {
		for _, v := range []*ear.Verifier{trusted, insecure} {
			c, raw, err := v.Verify(token)
			if err == nil {
				if c == nil || raw == nil {
					t.Fatal("no claims and no error")
				}
				continue
			}
			ok := false
			for _, e := range typed {
				ok = ok || errors.Is(err, e)
			}
			if !ok {
				t.Fatalf("untyped error %v", err)
			}
		}
	})
}
