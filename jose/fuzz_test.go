package jose_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/protocol"
)

// FuzzParsePublicKey feeds arbitrary tee-pubkey JSON: a key is either
// refused with a typed error or usable to seal a resource.
func FuzzParsePublicKey(f *testing.F) {
	ecs, rk := testKeys(f)
	for _, crv := range []string{"P-256", "P-384", "P-521"} {
		k, _ := jose.NewTEEKey(ecs[crv])
		b, _ := json.Marshal(k.Public())
		f.Add(b)
	}
	rkk, _ := jose.NewTEEKey(rk)
	b, _ := json.Marshal(rkk.Public())
	f.Add(b)
	f.Add([]byte(`{"kty":"EC","alg":"ECDH-ES+A256KW","crv":"P-256","x":"AA","y":"AA"}`))
	f.Add([]byte(`{"kty":"RSA","alg":"RSA1_5","n":"AQAB","e":"AQAB"}`))
	f.Add([]byte(`{"kty":"RSA","alg":"RSA-OAEP-256","n":"` + rkk.Public().N + `","e":"Aw"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"kty":"EC","crv":"P-521","alg":"ECDH-ES+A256KW","x":"____","y":"-_-_"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var k protocol.TeePubKey
		if json.Unmarshal(data, &k) != nil {
			return
		}
		for _, allow := range []bool{false, true} {
			pub, alg, err := jose.ParsePublicKey(k, allow)
			if err != nil {
				if !errors.Is(err, jose.ErrInvalidKey) && !errors.Is(err, jose.ErrAlgNotAllowed) {
					t.Fatalf("untyped error %v", err)
				}
				if pub != nil || alg != "" {
					t.Fatal("key returned with an error")
				}
				// Encrypt reads EC keys itself: it must refuse the same.
				if _, err := jose.Encrypt(k, []byte("x"), allow); err == nil {
					t.Fatalf("Encrypt accepted %+v, which ParsePublicKey refuses", k)
				}
				continue
			}
			if pub == nil || alg == "" {
				t.Fatal("no key and no error")
			}
			if k.Alg == jose.AlgRSA15 && !allow {
				t.Fatal("RSA1_5 accepted without opt-in")
			}
			// An accepted key must be usable.
			if _, err := jose.Encrypt(k, []byte("x"), allow); err != nil {
				t.Fatalf("accepted key %+v cannot encrypt: %v", k, err)
			}
		}
	})
}

// FuzzDecrypt feeds arbitrary Response JSON to Decrypt with EC and RSA
// keys: it must never panic and only fail with the typed errors.
func FuzzDecrypt(f *testing.F) {
	ecs, rk := testKeys(f)
	ek, _ := jose.NewTEEKey(ecs["P-256"])
	rkk, _ := jose.NewTEEKey(rk)
	p521, _ := jose.NewTEEKey(ecs["P-521"])
	for _, k := range []*jose.TEEKey{ek, rkk, p521} {
		resp, err := jose.Encrypt(k.Public(), []byte("seed secret"), false)
		if err != nil {
			f.Fatal(err)
		}
		b, _ := json.Marshal(resp)
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"protected":"eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0","encrypted_key":"","iv":"AAAAAAAAAAAAAAAA","ciphertext":"","tag":"AAAAAAAAAAAAAAAAAAAAAA"}`))
	f.Add([]byte(`{"protected":"eyJhbGciOiJFQ0RILUVTK0EyNTZLVyIsImVuYyI6IkEyNTZHQ00iLCJlcGsiOnsia3R5IjoiRUMiLCJjcnYiOiJQLTI1NiIsIngiOiJBQSIsInkiOiJBQSJ9fQ","encrypted_key":"AAAA","iv":"AAAA","ciphertext":"AAAA","tag":"AAAA"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp protocol.Response
		if json.Unmarshal(data, &resp) != nil {
			return
		}
		for _, k := range []*jose.TEEKey{ek, rkk, p521} {
			out, err := k.Decrypt(&resp)
			if err != nil {
				if !errors.Is(err, jose.ErrMalformedJWE) && !errors.Is(err, jose.ErrDecryptionFailed) {
					t.Fatalf("untyped error %v", err)
				}
				continue
			}
			// Only the seeds' own ciphertexts open (nobody else holds the keys).
			if !bytes.Equal(out, []byte("seed secret")) {
				t.Fatalf("decrypted unexpected plaintext %q", out)
			}
		}
	})
}

// FuzzVerifySigned feeds arbitrary compact JWS to the TEE-key signature
// check: it verifies only what the key signed, and refuses the rest with
// a typed error.
func FuzzVerifySigned(f *testing.F) {
	k, err := jose.GenerateTEEKey("EC")
	if err != nil {
		f.Fatal(err)
	}
	good, _ := k.Sign([]byte(`{"nonce":"n"}`))
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, jws string) {
		payload, err := jose.VerifySigned(k.Public(), jws)
		if err != nil {
			if !errors.Is(err, jose.ErrBadSignature) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if jws != good && !bytes.Equal(payload, []byte(`{"nonce":"n"}`)) {
			t.Fatalf("verified a JWS the key did not sign: %q", payload)
		}
	})
}
