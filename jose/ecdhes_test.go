package jose

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"

	gojose "github.com/go-jose/go-jose/v4"

	"github.com/cocoon-cc/cocoon/protocol"
)

func TestAESKeyWrapRFC3394(t *testing.T) {
	// RFC 3394 section 4.6: 256 bits of key data with a 256-bit KEK.
	kek, _ := hex.DecodeString("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
	key, _ := hex.DecodeString("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
	want, _ := hex.DecodeString("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
	got, err := aesKeyWrap(kek, key)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("wrap = %x, %v", got, err)
	}
	back, err := aesKeyUnwrap(kek, got)
	if err != nil || !bytes.Equal(back, key) {
		t.Fatalf("unwrap = %x, %v", back, err)
	}
	got[5] ^= 1
	if _, err := aesKeyUnwrap(kek, got); !errors.Is(err, ErrDecryptionFailed) {
		t.Fatalf("tampered unwrap: %v", err)
	}
}

// TestECDHESInteropGoJose checks the native ECDH-ES path against go-jose
// both ways, on every curve.
func TestECDHESInteropGoJose(t *testing.T) {
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
		t.Run(c.Params().Name, func(t *testing.T) {
			priv, _ := ecdsa.GenerateKey(c, rand.Reader)
			k, err := NewTEEKey(priv)
			if err != nil {
				t.Fatal(err)
			}
			msg := []byte("interop " + c.Params().Name)
			resp, err := Encrypt(k.Public(), msg, false)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := json.Marshal(resp)
			obj, err := gojose.ParseEncryptedJSON(string(raw), []gojose.KeyAlgorithm{gojose.ECDH_ES_A256KW},
				[]gojose.ContentEncryption{gojose.A256GCM})
			if err != nil {
				t.Fatal(err)
			}
			if out, err := obj.Decrypt(priv); err != nil || !bytes.Equal(out, msg) {
				t.Fatalf("go-jose decrypt = %q, %v", out, err)
			}

			enc, _ := gojose.NewEncrypter(gojose.A256GCM, gojose.Recipient{Algorithm: gojose.ECDH_ES_A256KW, Key: &priv.PublicKey}, nil)
			jwe, _ := enc.Encrypt(msg)
			var theirs protocol.Response
			json.Unmarshal([]byte(jwe.FullSerialize()), &theirs)
			if out, err := k.Decrypt(&theirs); err != nil || !bytes.Equal(out, msg) {
				t.Fatalf("native decrypt of go-jose = %q, %v", out, err)
			}
		})
	}
}

func TestECDHESRefusesForeignCurveEPK(t *testing.T) {
	k, _ := GenerateTEEKey("EC")
	other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ok, _ := NewTEEKey(other)
	resp, _ := Encrypt(ok.Public(), []byte("x"), false)
	if _, err := k.Decrypt(resp); !errors.Is(err, ErrMalformedJWE) {
		t.Fatalf("P-384 epk opened by a P-256 key: %v", err)
	}
}
