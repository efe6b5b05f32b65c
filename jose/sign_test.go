package jose_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/jose"
)

// TestSignVerify signs with every kind of TEE key: the payload comes back
// under the signer's public key, and not under another key, tampered, or
// with an algorithm the key does not sign with.
func TestSignVerify(t *testing.T) {
	ecs, rk := testKeys(t)
	keys := map[string]*jose.TEEKey{}
	for name, k := range ecs {
		keys[name], _ = jose.NewTEEKey(k)
	}
	keys["RSA"], _ = jose.NewTEEKey(rk)
	other, err := jose.GenerateTEEKey("EC")
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte(`{"nonce":"n1"}`)
	for name, k := range keys {
		jws, err := k.Sign(payload)
		if err != nil {
			t.Fatalf("%s: sign: %v", name, err)
		}
		got, err := jose.VerifySigned(k.Public(), jws)
		if err != nil || string(got) != string(payload) {
			t.Fatalf("%s: verify: %q %v", name, got, err)
		}
		if _, err := jose.VerifySigned(other.Public(), jws); !errors.Is(err, jose.ErrBadSignature) {
			t.Errorf("%s: verified under another key: %v", name, err)
		}
		parts := strings.Split(jws, ".")
		parts[1] = strings.Repeat("A", len(parts[1]))
		if _, err := jose.VerifySigned(k.Public(), strings.Join(parts, ".")); !errors.Is(err, jose.ErrBadSignature) {
			t.Errorf("%s: tampered payload verified: %v", name, err)
		}
	}
	// An unsigned JWS (alg none) and an HMAC one are refused.
	for _, hdr := range []string{`eyJhbGciOiJub25lIn0`, `eyJhbGciOiJIUzI1NiJ9`} {
		if _, err := jose.VerifySigned(keys["P-256"].Public(), hdr+".e30."); !errors.Is(err, jose.ErrBadSignature) {
			t.Errorf("header %s: %v", hdr, err)
		}
	}
	if _, err := jose.VerifySigned(keys["P-256"].Public(), strings.Repeat("a", jose.MaxJWSSize+1)); !errors.Is(err, jose.ErrBadSignature) {
		t.Errorf("oversized JWS: %v", err)
	}
}
