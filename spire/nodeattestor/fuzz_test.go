package nodeattestor

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"

	"github.com/cocoon-cc/cocoon/attestation/ear"
)

// FuzzCheckPayload: whatever an agent sends, the server refuses it with
// an error unless it is a token its keys signed.
func FuzzCheckPayload(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, err := ear.NewSigner(key, nil)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	tok, _ := signer.Sign(&ear.Claims{IssuedAt: now.Unix(), Expiry: now.Add(time.Hour).Unix(),
		Submods: map[string]ear.Appraisal{"cpu0": {Status: ear.StatusAffirming}}})
	good, _ := json.Marshal(payload{Token: tok})
	f.Add(good)
	f.Add([]byte(`{"token":"a.b.c"}`))
	f.Add([]byte(`null`))
	v := ear.NewVerifier(ear.VerifierOptions{Keys: nil})
	v2 := ear.NewVerifier(ear.VerifierOptions{Keys: []gojose.JSONWebKey{signer.Public()}})
	cfg := &ServerConfig{AllowSample: true}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, _, err := checkPayload(v, cfg, b); err == nil {
			t.Fatal("a payload accepted without trusted keys")
		}
		// No tee-pubkey in the seed token: even a signed token is refused.
		if _, _, err := checkPayload(v2, cfg, b); err == nil {
			t.Fatalf("accepted %q", b)
		}
	})
}
