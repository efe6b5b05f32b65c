package jose_test

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwe"

	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/protocol"
)

// Keys are generated once: RSA key generation dominates the run time.
var (
	keysOnce sync.Once
	ecKeys   map[string]*ecdsa.PrivateKey
	rsaPriv  *rsa.PrivateKey
)

func testKeys(t testing.TB) (map[string]*ecdsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keysOnce.Do(func() {
		ecKeys = map[string]*ecdsa.PrivateKey{}
		for name, c := range map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()} {
			k, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil {
				panic(err)
			}
			ecKeys[name] = k
		}
		var err error
		if rsaPriv, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return ecKeys, rsaPriv
}

type teeCase struct {
	name string
	key  *jose.TEEKey
	priv crypto.PrivateKey
	alg  string
}

func teeCases(t *testing.T) []teeCase {
	ecs, rk := testKeys(t)
	var out []teeCase
	for _, crv := range []string{"P-256", "P-384", "P-521"} {
		k, err := jose.NewTEEKey(ecs[crv])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, teeCase{"EC " + crv, k, ecs[crv], jose.AlgECDHES})
	}
	k, err := jose.NewTEEKey(rk)
	if err != nil {
		t.Fatal(err)
	}
	return append(out, teeCase{"RSA", k, rk, jose.AlgRSAOAEP})
}

var secret = []byte("the resource: \x00\x01\xff and some text")

func TestRoundTrip(t *testing.T) {
	for _, c := range teeCases(t) {
		t.Run(c.name, func(t *testing.T) {
			pub := c.key.Public()
			if pub.Alg != c.alg {
				t.Errorf("alg %q, want %q", pub.Alg, c.alg)
			}
			for _, pt := range [][]byte{secret, {}, bytes.Repeat([]byte{7}, 100000)} {
				resp, err := jose.Encrypt(pub, pt, false)
				if err != nil {
					t.Fatal(err)
				}
				got, err := c.key.Decrypt(resp)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, pt) {
					t.Fatalf("decrypted %d bytes, want %d", len(got), len(pt))
				}
				// The same through the package function and the raw key.
				if got, err := jose.Decrypt(c.priv, resp); err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("jose.Decrypt: %v", err)
				}
			}
		})
	}
}

func TestGenerateTEEKey(t *testing.T) {
	for _, kty := range []string{"", "EC"} {
		k, err := jose.GenerateTEEKey(kty)
		if err != nil {
			t.Fatal(err)
		}
		pub := k.Public()
		if pub.Kty != "EC" || pub.Crv != "P-256" || pub.Alg != jose.AlgECDHES || len(pub.X) != 43 || len(pub.Y) != 43 {
			t.Errorf("GenerateTEEKey(%q).Public() = %+v", kty, pub)
		}
		if _, _, err := jose.ParsePublicKey(pub, false); err != nil {
			t.Errorf("own key refused: %v", err)
		}
	}
	if testing.Short() {
		return
	}
	k, err := jose.GenerateTEEKey("RSA")
	if err != nil {
		t.Fatal(err)
	}
	pub := k.Public()
	if pub.Kty != "RSA" || pub.Alg != jose.AlgRSAOAEP || pub.E != "AQAB" || pub.Crv != "" {
		t.Errorf("RSA key %+v", pub)
	}
	n, _ := base64.RawURLEncoding.DecodeString(pub.N)
	if len(n) != 384 {
		t.Errorf("RSA modulus of %d bytes, want 384", len(n))
	}
	resp, err := jose.Encrypt(pub, secret, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.Decrypt(resp); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("RSA 3072 round trip: %v", err)
	}
	for _, kty := range []string{"oct", "OKP", "ec", "rsa"} {
		if _, err := jose.GenerateTEEKey(kty); !errors.Is(err, jose.ErrInvalidKey) {
			t.Errorf("GenerateTEEKey(%q): %v, want ErrInvalidKey", kty, err)
		}
	}
}

func TestNewTEEKeyFixedWidth(t *testing.T) {
	// Coordinates are always the full field width, even with leading zeros.
	for i := 0; i < 64; i++ {
		k, err := jose.GenerateTEEKey("EC")
		if err != nil {
			t.Fatal(err)
		}
		x, _ := base64.RawURLEncoding.DecodeString(k.Public().X)
		y, _ := base64.RawURLEncoding.DecodeString(k.Public().Y)
		if len(x) != 32 || len(y) != 32 {
			t.Fatalf("coordinates of %d and %d bytes", len(x), len(y))
		}
	}
	ecs, _ := testKeys(t)
	k, _ := jose.NewTEEKey(ecs["P-521"])
	x, _ := base64.RawURLEncoding.DecodeString(k.Public().X)
	if len(x) != 66 {
		t.Errorf("P-521 x of %d bytes, want 66", len(x))
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if _, err := jose.NewTEEKey(p224); !errors.Is(err, jose.ErrInvalidKey) {
		t.Errorf("P-224 key: %v, want ErrInvalidKey", err)
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := jose.NewTEEKey(ed); !errors.Is(err, jose.ErrInvalidKey) {
		t.Errorf("Ed25519 key: %v, want ErrInvalidKey", err)
	}
}

// TestWireCompatJWX opens what Encrypt produced with lestrrat-go/jwx, an
// implementation that shares no code with go-jose.
func TestWireCompatJWX(t *testing.T) {
	for _, c := range teeCases(t) {
		t.Run(c.name, func(t *testing.T) {
			resp, err := jose.Encrypt(c.key.Public(), secret, false)
			if err != nil {
				t.Fatal(err)
			}
			checkFlattened(t, resp, c.alg)
			raw, err := json.Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			alg := jwa.ECDH_ES_A256KW()
			if c.alg == jose.AlgRSAOAEP {
				alg = jwa.RSA_OAEP_256()
			}
			got, err := jwe.Decrypt(raw, jwe.WithKey(alg, c.priv))
			if err != nil {
				t.Fatalf("jwx could not decrypt: %v\n%s", err, raw)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("jwx decrypted %q", got)
			}
			msg, err := jwe.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			h := msg.ProtectedHeaders()
			if a, ok := h.Algorithm(); !ok || a.String() != c.alg {
				t.Errorf("jwx sees alg %v", a)
			}
			if e, ok := h.ContentEncryption(); !ok || e.String() != "A256GCM" {
				t.Errorf("jwx sees enc %v", e)
			}
			_, hasEPK := h.EphemeralPublicKey()
			if hasEPK != (c.alg == jose.AlgECDHES) {
				t.Errorf("epk present = %v", hasEPK)
			}
		})
	}
}

// checkFlattened checks the object is a flattened JWE whose protected
// header names the protocol's algorithms, all members base64url unpadded.
func checkFlattened(t *testing.T, resp *protocol.Response, alg string) map[string]any {
	t.Helper()
	raw, _ := json.Marshal(resp)
	var members map[string]any
	if err := json.Unmarshal(raw, &members); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"protected", "encrypted_key", "iv", "ciphertext", "tag"} {
		s, ok := members[m].(string)
		if !ok || s == "" && m != "ciphertext" {
			t.Errorf("member %s missing: %s", m, raw)
		}
		if strings.ContainsAny(s, "=+/") {
			t.Errorf("member %s is not unpadded base64url: %q", m, s)
		}
	}
	for _, m := range []string{"aad", "header", "recipients", "unprotected"} {
		if _, ok := members[m]; ok {
			t.Errorf("unexpected member %s", m)
		}
	}
	hb, err := base64.RawURLEncoding.DecodeString(resp.Protected)
	if err != nil {
		t.Fatal(err)
	}
	var hdr map[string]any
	if err := json.Unmarshal(hb, &hdr); err != nil {
		t.Fatal(err)
	}
	if hdr["alg"] != alg || hdr["enc"] != "A256GCM" {
		t.Errorf("protected header %s", hb)
	}
	if _, ok := hdr["epk"]; ok != (alg == jose.AlgECDHES) {
		t.Errorf("epk in header = %v: %s", ok, hb)
	}
	iv, _ := base64.RawURLEncoding.DecodeString(resp.IV)
	tag, _ := base64.RawURLEncoding.DecodeString(resp.Tag)
	if len(iv) != 12 || len(tag) != 16 {
		t.Errorf("iv %d bytes, tag %d bytes", len(iv), len(tag))
	}
	return hdr
}

// TestWireByHand opens the JWE with nothing but the standard library:
// ECDH + Concat KDF (SHA-256, empty apu/apv) + AES key unwrap, or RSA-OAEP
// with SHA-256, then AES-256-GCM with AAD = the protected header's ASCII.
func TestWireByHand(t *testing.T) {
	for _, c := range teeCases(t) {
		t.Run(c.name, func(t *testing.T) {
			resp, err := jose.Encrypt(c.key.Public(), secret, false)
			if err != nil {
				t.Fatal(err)
			}
			hdr := checkFlattened(t, resp, c.alg)
			ek := b64d(t, resp.EncryptedKey)
			var cek []byte
			switch priv := c.priv.(type) {
			case *rsa.PrivateKey:
				if cek, err = rsa.DecryptOAEP(sha256.New(), nil, priv, ek, nil); err != nil {
					t.Fatal(err)
				}
			case *ecdsa.PrivateKey:
				kek := ecdhKEK(t, priv, hdr["epk"].(map[string]any))
				if cek, err = aesUnwrap(kek, ek); err != nil {
					t.Fatal(err)
				}
			}
			if len(cek) != 32 {
				t.Fatalf("CEK of %d bytes", len(cek))
			}
			block, _ := aes.NewCipher(cek)
			gcm, _ := cipher.NewGCM(block)
			sealed := append(b64d(t, resp.Ciphertext), b64d(t, resp.Tag)...)
			got, err := gcm.Open(nil, b64d(t, resp.IV), sealed, []byte(resp.Protected))
			if err != nil {
				t.Fatalf("AES-GCM with AAD = protected header: %v", err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("got %q", got)
			}
			if _, err := gcm.Open(nil, b64d(t, resp.IV), sealed, nil); err == nil {
				t.Error("AES-GCM opened without the AAD")
			}
		})
	}
}

func b64d(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return b
}

func ecdhKEK(t *testing.T, priv *ecdsa.PrivateKey, epk map[string]any) []byte {
	t.Helper()
	if epk["kty"] != "EC" || epk["crv"] != priv.Curve.Params().Name {
		t.Fatalf("epk %v", epk)
	}
	curve := map[string]ecdh.Curve{"P-256": ecdh.P256(), "P-384": ecdh.P384(), "P-521": ecdh.P521()}[priv.Curve.Params().Name]
	point := append(append([]byte{4}, b64d(t, epk["x"].(string))...), b64d(t, epk["y"].(string))...)
	ep, err := curve.NewPublicKey(point)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := priv.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	z, err := dp.ECDH(ep)
	if err != nil {
		t.Fatal(err)
	}
	// Concat KDF, one round: counter || Z || AlgorithmID || PartyUInfo ||
	// PartyVInfo || SuppPubInfo (key length in bits).
	alg := []byte(jose.AlgECDHES)
	h := sha256.New()
	binary.Write(h, binary.BigEndian, uint32(1))
	h.Write(z)
	binary.Write(h, binary.BigEndian, uint32(len(alg)))
	h.Write(alg)
	binary.Write(h, binary.BigEndian, uint32(0)) // apu
	binary.Write(h, binary.BigEndian, uint32(0)) // apv
	binary.Write(h, binary.BigEndian, uint32(256))
	return h.Sum(nil)
}

// aesUnwrap is RFC 3394 key unwrapping.
func aesUnwrap(kek, wrapped []byte) ([]byte, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	if len(wrapped)%8 != 0 || len(wrapped) < 24 {
		return nil, errors.New("bad wrapped key length")
	}
	n := len(wrapped)/8 - 1
	a := binary.BigEndian.Uint64(wrapped[:8])
	r := make([]byte, n*8)
	copy(r, wrapped[8:])
	buf := make([]byte, 16)
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			binary.BigEndian.PutUint64(buf[:8], a^uint64(n*j+i))
			copy(buf[8:], r[(i-1)*8:i*8])
			block.Decrypt(buf, buf)
			a = binary.BigEndian.Uint64(buf[:8])
			copy(r[(i-1)*8:i*8], buf[8:])
		}
	}
	if a != 0xA6A6A6A6A6A6A6A6 {
		return nil, errors.New("key unwrap integrity check failed")
	}
	return r, nil
}

func TestRSA15(t *testing.T) {
	_, rk := testKeys(t)
	k, _ := jose.NewTEEKey(rk)
	pub := k.Public()
	pub.Alg = jose.AlgRSA15
	if _, _, err := jose.ParsePublicKey(pub, false); !errors.Is(err, jose.ErrAlgNotAllowed) {
		t.Errorf("RSA1_5 without opt-in: %v, want ErrAlgNotAllowed", err)
	}
	if _, err := jose.Encrypt(pub, secret, false); !errors.Is(err, jose.ErrAlgNotAllowed) {
		t.Errorf("Encrypt RSA1_5 without opt-in: %v, want ErrAlgNotAllowed", err)
	}
	_, alg, err := jose.ParsePublicKey(pub, true)
	if err != nil || alg != gojose.RSA1_5 {
		t.Fatalf("RSA1_5 with opt-in: %v, %v", alg, err)
	}
	resp, err := jose.Encrypt(pub, secret, true)
	if err != nil {
		t.Fatal(err)
	}
	checkFlattened(t, resp, jose.AlgRSA15)
	if got, err := k.Decrypt(resp); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("RSA1_5 round trip: %v", err)
	}
	raw, _ := json.Marshal(resp)
	if got, err := jwe.Decrypt(raw, jwe.WithKey(jwa.RSA1_5(), rk)); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("jwx RSA1_5: %v", err)
	}
	// The opt-in does not open other algorithms.
	ecs, _ := testKeys(t)
	ek, _ := jose.NewTEEKey(ecs["P-256"])
	ep := ek.Public()
	ep.Alg = jose.AlgRSA15
	if _, _, err := jose.ParsePublicKey(ep, true); !errors.Is(err, jose.ErrAlgNotAllowed) {
		t.Errorf("RSA1_5 on an EC key: %v", err)
	}
}

func TestParsePublicKeyRejects(t *testing.T) {
	ecs, rk := testKeys(t)
	ek, _ := jose.NewTEEKey(ecs["P-256"])
	ec := ek.Public()
	rkk, _ := jose.NewTEEKey(rk)
	rs := rkk.Public()
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallK, _ := jose.NewTEEKey(small)

	enc := base64.RawURLEncoding.EncodeToString
	yPlus1 := new(big.Int).Add(ecs["P-256"].Y, big.NewInt(1))
	p := elliptic.P256().Params().P
	xPlusP := new(big.Int).Add(ecs["P-256"].X, p)

	mod := func(base protocol.TeePubKey, f func(*protocol.TeePubKey)) protocol.TeePubKey {
		f(&base)
		return base
	}
	cases := []struct {
		name string
		key  protocol.TeePubKey
		want error
	}{
		{"empty key", protocol.TeePubKey{}, jose.ErrInvalidKey},
		{"kty oct", mod(ec, func(k *protocol.TeePubKey) { k.Kty = "oct" }), jose.ErrInvalidKey},
		{"kty lower case", mod(ec, func(k *protocol.TeePubKey) { k.Kty = "ec" }), jose.ErrInvalidKey},
		{"kty OKP", mod(ec, func(k *protocol.TeePubKey) { k.Kty = "OKP" }), jose.ErrInvalidKey},
		{"EC no alg", mod(ec, func(k *protocol.TeePubKey) { k.Alg = "" }), jose.ErrAlgNotAllowed},
		{"EC ECDH-ES direct", mod(ec, func(k *protocol.TeePubKey) { k.Alg = "ECDH-ES" }), jose.ErrAlgNotAllowed},
		{"EC ECDH-ES+A128KW", mod(ec, func(k *protocol.TeePubKey) { k.Alg = "ECDH-ES+A128KW" }), jose.ErrAlgNotAllowed},
		{"EC RSA alg", mod(ec, func(k *protocol.TeePubKey) { k.Alg = jose.AlgRSAOAEP }), jose.ErrAlgNotAllowed},
		{"EC ES256", mod(ec, func(k *protocol.TeePubKey) { k.Alg = "ES256" }), jose.ErrAlgNotAllowed},
		{"curve P-224", mod(ec, func(k *protocol.TeePubKey) { k.Crv = "P-224" }), jose.ErrInvalidKey},
		{"curve secp256k1", mod(ec, func(k *protocol.TeePubKey) { k.Crv = "secp256k1" }), jose.ErrInvalidKey},
		{"curve empty", mod(ec, func(k *protocol.TeePubKey) { k.Crv = "" }), jose.ErrInvalidKey},
		{"curve mismatch", mod(ec, func(k *protocol.TeePubKey) { k.Crv = "P-384" }), jose.ErrInvalidKey},
		{"off curve", mod(ec, func(k *protocol.TeePubKey) { k.Y = enc(yPlus1.Bytes()) }), jose.ErrInvalidKey},
		{"x not reduced", mod(ec, func(k *protocol.TeePubKey) { k.X = enc(xPlusP.Bytes()) }), jose.ErrInvalidKey},
		{"point (0,0)", mod(ec, func(k *protocol.TeePubKey) { k.X, k.Y = "AA", "AA" }), jose.ErrInvalidKey},
		{"x empty", mod(ec, func(k *protocol.TeePubKey) { k.X = "" }), jose.ErrInvalidKey},
		{"y empty", mod(ec, func(k *protocol.TeePubKey) { k.Y = "" }), jose.ErrInvalidKey},
		{"x bad base64", mod(ec, func(k *protocol.TeePubKey) { k.X = "!!!!" }), jose.ErrInvalidKey},
		{"x std base64", mod(ec, func(k *protocol.TeePubKey) { k.X = strings.ReplaceAll(k.X, "-", "+") + "/=" }), jose.ErrInvalidKey},
		{"y padded", mod(ec, func(k *protocol.TeePubKey) { k.Y += "=" }), jose.ErrInvalidKey},
		{"RSA no alg", mod(rs, func(k *protocol.TeePubKey) { k.Alg = "" }), jose.ErrAlgNotAllowed},
		{"RSA-OAEP sha1", mod(rs, func(k *protocol.TeePubKey) { k.Alg = "RSA-OAEP" }), jose.ErrAlgNotAllowed},
		{"RSA RS256", mod(rs, func(k *protocol.TeePubKey) { k.Alg = "RS256" }), jose.ErrAlgNotAllowed},
		{"RSA EC alg", mod(rs, func(k *protocol.TeePubKey) { k.Alg = jose.AlgECDHES }), jose.ErrAlgNotAllowed},
		{"RSA 1024", smallK.Public(), jose.ErrInvalidKey},
		{"RSA even modulus", mod(rs, func(k *protocol.TeePubKey) {
			n := b64d(t, k.N)
			n[len(n)-1] &^= 1
			k.N = enc(n)
		}), jose.ErrInvalidKey},
		{"RSA 16392 bits", mod(rs, func(k *protocol.TeePubKey) { k.N = enc(append([]byte{0xff}, bytes.Repeat([]byte{0xfb}, 2048)...)) }), jose.ErrInvalidKey},
		{"RSA n empty", mod(rs, func(k *protocol.TeePubKey) { k.N = "" }), jose.ErrInvalidKey},
		{"RSA n bad base64", mod(rs, func(k *protocol.TeePubKey) { k.N = "a b" }), jose.ErrInvalidKey},
		{"RSA e empty", mod(rs, func(k *protocol.TeePubKey) { k.E = "" }), jose.ErrInvalidKey},
		{"RSA e = 1", mod(rs, func(k *protocol.TeePubKey) { k.E = enc([]byte{1}) }), jose.ErrInvalidKey},
		{"RSA e even", mod(rs, func(k *protocol.TeePubKey) { k.E = enc([]byte{1, 0, 0}) }), jose.ErrInvalidKey},
		{"RSA e huge", mod(rs, func(k *protocol.TeePubKey) { k.E = enc(bytes.Repeat([]byte{0xff}, 9)) }), jose.ErrInvalidKey},
		{"RSA e 2^31+1", mod(rs, func(k *protocol.TeePubKey) { k.E = enc([]byte{0x80, 0, 0, 1}) }), jose.ErrInvalidKey},
		{"RSA e bad base64", mod(rs, func(k *protocol.TeePubKey) { k.E = "AQAB=" }), jose.ErrInvalidKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pub, alg, err := jose.ParsePublicKey(c.key, false)
			if !errors.Is(err, c.want) {
				t.Fatalf("ParsePublicKey(%+v) = %v, %q, %v; want %v", c.key, pub, alg, err, c.want)
			}
			if pub != nil || alg != "" {
				t.Errorf("a key came back with the error: %v %q", pub, alg)
			}
			if _, err := jose.Encrypt(c.key, secret, true); err == nil {
				t.Error("Encrypt accepted the key")
			}
		})
	}
	// The good keys pass, with the right algorithm.
	if _, alg, err := jose.ParsePublicKey(ec, false); err != nil || alg != gojose.ECDH_ES_A256KW {
		t.Errorf("good EC key: %v %v", alg, err)
	}
	if _, alg, err := jose.ParsePublicKey(rs, false); err != nil || alg != gojose.RSA_OAEP_256 {
		t.Errorf("good RSA key: %v %v", alg, err)
	}
	// The largest modulus accepted.
	big16k := rs
	big16k.N = enc(bytes.Repeat([]byte{0xfb}, jose.MaxRSABits/8))
	if _, _, err := jose.ParsePublicKey(big16k, false); err != nil {
		t.Errorf("16384-bit modulus: %v", err)
	}
	// A key with members of the other type is fine: they are ignored.
	withJunk := ec
	withJunk.N, withJunk.E = "junk", "junk"
	if _, _, err := jose.ParsePublicKey(withJunk, false); err != nil {
		t.Errorf("EC key with RSA members: %v", err)
	}
}

func TestTamper(t *testing.T) {
	ecs, rk := testKeys(t)
	for _, priv := range []crypto.PrivateKey{ecs["P-256"], rk} {
		k, _ := jose.NewTEEKey(priv)
		fresh := func() *protocol.Response {
			resp, err := jose.Encrypt(k.Public(), secret, false)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}
		flip := func(s string, i int) string {
			b := b64d(t, s)
			b[i%len(b)] ^= 0x01
			return base64.RawURLEncoding.EncodeToString(b)
		}
		reheader := func(r *protocol.Response, f func(map[string]any)) {
			var h map[string]any
			json.Unmarshal(b64d(t, r.Protected), &h)
			f(h)
			b, _ := json.Marshal(h)
			r.Protected = base64.RawURLEncoding.EncodeToString(b)
		}
		cases := map[string]func(*protocol.Response){
			"ciphertext first byte": func(r *protocol.Response) { r.Ciphertext = flip(r.Ciphertext, 0) },
			"ciphertext last byte":  func(r *protocol.Response) { r.Ciphertext = flip(r.Ciphertext, len(secret)-1) },
			"ciphertext truncated":  func(r *protocol.Response) { r.Ciphertext = r.Ciphertext[:len(r.Ciphertext)-4] },
			"tag":                   func(r *protocol.Response) { r.Tag = flip(r.Tag, 5) },
			"tag truncated":         func(r *protocol.Response) { r.Tag = r.Tag[:10] },
			"tag empty":             func(r *protocol.Response) { r.Tag = "" },
			"iv":                    func(r *protocol.Response) { r.IV = flip(r.IV, 3) },
			"iv empty":              func(r *protocol.Response) { r.IV = "" },
			"encrypted key":         func(r *protocol.Response) { r.EncryptedKey = flip(r.EncryptedKey, 7) },
			"encrypted key empty":   func(r *protocol.Response) { r.EncryptedKey = "" },
			"protected extra member": func(r *protocol.Response) {
				reheader(r, func(h map[string]any) { h["kid"] = "x" })
			},
			"protected enc A128GCM": func(r *protocol.Response) {
				reheader(r, func(h map[string]any) { h["enc"] = "A128GCM" })
			},
			"protected alg dir": func(r *protocol.Response) {
				reheader(r, func(h map[string]any) { h["alg"] = "dir" })
			},
			"protected alg none": func(r *protocol.Response) {
				reheader(r, func(h map[string]any) { h["alg"] = "none" })
			},
			"protected re-encoded padded": func(r *protocol.Response) { r.Protected += "=" },
			"protected not base64":        func(r *protocol.Response) { r.Protected = "%%%" },
			"protected not JSON":          func(r *protocol.Response) { r.Protected = base64.RawURLEncoding.EncodeToString([]byte("nope")) },
			"protected empty":             func(r *protocol.Response) { r.Protected = "" },
			"aad added":                   func(r *protocol.Response) { r.AAD = "YWFk" },
			"ciphertext bad base64":       func(r *protocol.Response) { r.Ciphertext = "***" },
		}
		for name, f := range cases {
			t.Run(name, func(t *testing.T) {
				r := fresh()
				f(r)
				got, err := k.Decrypt(r)
				if err == nil {
					t.Fatalf("tampered JWE decrypted to %q", got)
				}
				if !errors.Is(err, jose.ErrDecryptionFailed) && !errors.Is(err, jose.ErrMalformedJWE) {
					t.Errorf("error %v is neither ErrDecryptionFailed nor ErrMalformedJWE", err)
				}
			})
		}
		// The untampered object still opens: the cases did not share state.
		if got, err := k.Decrypt(fresh()); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("fresh JWE: %v", err)
		}
	}
}

func TestDecryptWrongKey(t *testing.T) {
	ecs, rk := testKeys(t)
	a, _ := jose.NewTEEKey(ecs["P-256"])
	b, _ := jose.GenerateTEEKey("EC")
	resp, _ := jose.Encrypt(a.Public(), secret, false)
	if _, err := b.Decrypt(resp); !errors.Is(err, jose.ErrDecryptionFailed) {
		t.Errorf("other EC key: %v, want ErrDecryptionFailed", err)
	}
	// An RSA key on an EC JWE, and a P-384 key on a P-256 JWE.
	if _, err := jose.Decrypt(rk, resp); err == nil {
		t.Error("RSA key opened an ECDH-ES JWE")
	}
	if _, err := jose.Decrypt(ecs["P-384"], resp); err == nil {
		t.Error("P-384 key opened a P-256 JWE")
	}
	if _, err := jose.Decrypt(ecs["P-256"], &protocol.Response{}); !errors.Is(err, jose.ErrMalformedJWE) {
		t.Errorf("empty Response: %v, want ErrMalformedJWE", err)
	}
}

// TestDecryptRefusesOtherAlgorithms: a JWE that uses algorithms outside the
// protocol is refused even when it is otherwise valid for the key.
func TestDecryptRefusesOtherAlgorithms(t *testing.T) {
	ecs, rk := testKeys(t)
	cases := []struct {
		name string
		alg  gojose.KeyAlgorithm
		enc  gojose.ContentEncryption
		pub  any
		priv crypto.PrivateKey
	}{
		{"A128GCM content", gojose.ECDH_ES_A256KW, gojose.A128GCM, &ecs["P-256"].PublicKey, ecs["P-256"]},
		{"A256CBC-HS512 content", gojose.RSA_OAEP_256, gojose.A256CBC_HS512, &rk.PublicKey, rk},
		{"ECDH-ES direct", gojose.ECDH_ES, gojose.A256GCM, &ecs["P-256"].PublicKey, ecs["P-256"]},
		{"ECDH-ES+A128KW", gojose.ECDH_ES_A128KW, gojose.A256GCM, &ecs["P-256"].PublicKey, ecs["P-256"]},
		{"RSA-OAEP sha1", gojose.RSA_OAEP, gojose.A256GCM, &rk.PublicKey, rk},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc, err := gojose.NewEncrypter(c.enc, gojose.Recipient{Algorithm: c.alg, Key: c.pub}, nil)
			if err != nil {
				t.Fatal(err)
			}
			obj, err := enc.Encrypt(secret)
			if err != nil {
				t.Fatal(err)
			}
			var resp protocol.Response
			if err := json.Unmarshal([]byte(obj.FullSerialize()), &resp); err != nil {
				t.Fatal(err)
			}
			if got, err := jose.Decrypt(c.priv, &resp); !errors.Is(err, jose.ErrMalformedJWE) {
				t.Errorf("Decrypt = %q, %v; want ErrMalformedJWE", got, err)
			}
		})
	}
}

func TestLoadTEEKeyPEM(t *testing.T) {
	ecs, rk := testKeys(t)
	pemOf := func(typ string, der []byte, err error) []byte {
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}
	pkcs8 := func(k any) ([]byte, error) { return x509.MarshalPKCS8PrivateKey(k) }
	type pemCase struct {
		name string
		pem  []byte
		want protocol.TeePubKey
	}
	var cases []pemCase
	for _, crv := range []string{"P-256", "P-384", "P-521"} {
		want, _ := jose.NewTEEKey(ecs[crv])
		d8, err := pkcs8(ecs[crv])
		cases = append(cases, pemCase{"PKCS8 " + crv, pemOf("PRIVATE KEY", d8, err), want.Public()})
		sec1, err := x509.MarshalECPrivateKey(ecs[crv])
		cases = append(cases, pemCase{"SEC1 " + crv, pemOf("EC PRIVATE KEY", sec1, err), want.Public()})
	}
	rwant, _ := jose.NewTEEKey(rk)
	d8, err := pkcs8(rk)
	cases = append(cases,
		pemCase{"PKCS8 RSA", pemOf("PRIVATE KEY", d8, err), rwant.Public()},
		pemCase{"PKCS1 RSA", pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk), nil), rwant.Public()})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Leading text before the block is allowed, as in openssl output.
			k, err := jose.LoadTEEKeyPEM(append([]byte("comment\n"), c.pem...))
			if err != nil {
				t.Fatal(err)
			}
			if k.Public() != c.want {
				t.Fatalf("Public() = %+v, want %+v", k.Public(), c.want)
			}
			resp, err := jose.Encrypt(k.Public(), secret, false)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := k.Decrypt(resp); err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("round trip: %v", err)
			}
		})
	}

	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(ed)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p224DER, _ := x509.MarshalECPrivateKey(p224)
	pubDER, _ := x509.MarshalPKIXPublicKey(&ecs["P-256"].PublicKey)
	bad := map[string][]byte{
		"empty":          nil,
		"not PEM":        []byte("hello"),
		"garbage DER":    pemOf("PRIVATE KEY", []byte{0x30, 0x03, 0x02, 0x01, 0x01}, nil),
		"Ed25519":        pemOf("PRIVATE KEY", edDER, nil),
		"P-224 SEC1":     pemOf("EC PRIVATE KEY", p224DER, nil),
		"public key":     pemOf("PUBLIC KEY", pubDER, nil),
		"truncated PEM":  pemOf("PRIVATE KEY", d8, nil)[:60],
		"empty PEM body": pemOf("PRIVATE KEY", []byte{}, nil),
	}
	for name, b := range bad {
		if k, err := jose.LoadTEEKeyPEM(b); !errors.Is(err, jose.ErrInvalidKey) {
			t.Errorf("%s: LoadTEEKeyPEM = %v, %v; want ErrInvalidKey", name, k, err)
		}
	}
}
