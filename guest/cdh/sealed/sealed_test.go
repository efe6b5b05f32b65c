package sealed

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
	"github.com/cocoon-cc/cocoon/guest/cdh/wrap"
)

// kbs is an in-memory resource store standing in for the KBS.
type kbs map[string][]byte

var errNotFound = errors.New("not found")

func (k kbs) GetResource(_ context.Context, u resource.URI) ([]byte, error) {
	v, ok := k[u.Path()]
	if !ok {
		return nil, errNotFound
	}
	return append([]byte(nil), v...), nil
}

const vkURI = "kbs:///default/sealing/vk"

func setup(t testing.TB) (kbs, *ecdsa.PrivateKey, []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	vk, err := VerificationKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	kek := make([]byte, 32)
	rand.Read(kek)
	return kbs{"default/sealing/vk": vk, "default/app/pw": []byte("hunter2"), "default/kek/1": kek}, key, kek
}

func TestUnseal(t *testing.T) {
	store, key, kek := setup(t)
	u := &Unsealer{KBS: store}
	ctx := context.Background()
	vault, err := Seal(NewVault("kbs:///default/app/pw"), key, vkURI)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := u.Unseal(ctx, []byte(vault)); err != nil || string(got) != "hunter2" {
		t.Fatalf("vault = %q, %v", got, err)
	}
	for _, wt := range []wrap.Type{wrap.A256GCM, wrap.A256CTR} {
		env, err := NewEnvelope("kbs:///default/kek/1", kek, []byte("enveloped"), wt)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Seal(env, key, vkURI)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := u.Unseal(ctx, []byte(s)); err != nil || string(got) != "enveloped" {
			t.Fatalf("envelope %s = %q, %v", wt, got, err)
		}
	}

	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wrongKey, _ := Seal(NewVault("kbs:///default/app/pw"), other, vkURI)
	parts := strings.Split(vault, ".")
	tamper := func(i int) string {
		p := append([]string(nil), parts...)
		b, _ := base64.RawURLEncoding.DecodeString(p[i])
		b[len(b)/2] ^= 1
		p[i] = base64.RawURLEncoding.EncodeToString(b)
		return strings.Join(p, ".")
	}
	b64 := base64.RawURLEncoding.EncodeToString
	for name, c := range map[string]struct {
		secret string
		want   error
	}{
		"wrong key":          {wrongKey, ErrBadSignature},
		"tampered payload":   {tamper(2), ErrBadSignature},
		"tampered signature": {tamper(3), ErrBadSignature},
		"tampered header":    {tamper(1), ErrMalformed},
		"unsigned":           {strings.Join(parts[:3], ".") + ".", ErrUnsigned},
		"alg none":           {"sealed." + b64([]byte(`{"alg":"none","kid":"`+vkURI+`"}`)) + "." + parts[2] + "." + parts[3], ErrUnsigned},
		"no prefix":          {strings.TrimPrefix(vault, "sealed."), ErrMalformed},
		"three parts":        {"sealed.a.b", ErrMalformed},
		"bad kid":            {"sealed." + b64([]byte(`{"alg":"ES256","kid":"file:///etc/key"}`)) + "." + parts[2] + "." + parts[3], ErrMalformed},
	} {
		if _, err := u.Unseal(ctx, []byte(c.secret)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}

	// The KBS's refusal to give the verification key stops everything.
	delete(store, "default/sealing/vk")
	if _, err := u.Unseal(ctx, []byte(vault)); !errors.Is(err, errNotFound) {
		t.Errorf("no verification key: %v", err)
	}
	// A wrong key-wrapping key fails authentication.
	store["default/sealing/vk"], _ = VerificationKey(&key.PublicKey)
	env, _ := NewEnvelope("kbs:///default/kek/1", kek, []byte("x"), wrap.A256GCM)
	s, _ := Seal(env, key, vkURI)
	store["default/kek/1"] = make([]byte, 32)
	if _, err := u.Unseal(ctx, []byte(s)); !errors.Is(err, wrap.ErrDecrypt) {
		t.Errorf("wrong KEK: %v", err)
	}
}

func TestPayloadValidation(t *testing.T) {
	for name, c := range map[string]struct {
		json string
		want error
	}{
		"version":  {`{"version":"0.2.0","type":"vault","provider":"kbs","name":"kbs:///a/b/c"}`, ErrVersion},
		"type":     {`{"version":"0.1.0","type":"magic","provider":"kbs"}`, ErrUnknownType},
		"provider": {`{"version":"0.1.0","type":"vault","provider":"aliyun","name":"x"}`, ErrUnsupportedProvider},
		"name":     {`{"version":"0.1.0","type":"vault","provider":"kbs","name":"x"}`, ErrMalformed},
		"wrap":     {`{"version":"0.1.0","type":"envelope","provider":"kbs","key_id":"kbs:///a/b/c","wrap_type":"ROT13","iv":"AA==","encrypted_key":"AA==","encrypted_data":"AA=="}`, ErrMalformed},
		"b64":      {`{"version":"0.1.0","type":"envelope","provider":"kbs","key_id":"kbs:///a/b/c","wrap_type":"A256GCM","iv":"!","encrypted_key":"AA==","encrypted_data":"AA=="}`, ErrMalformed},
		"json":     {`[]`, ErrMalformed},
	} {
		if _, err := parsePayload([]byte(c.json)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	// Upstream's vault example parses (apart from its provider).
	if _, err := parsePayload([]byte(`{"version":"0.1.0","type":"vault","name":"kbs:///one/2/trois","provider":"kbs","provider_settings":{},"annotations":{}}`)); err != nil {
		t.Error(err)
	}
}

func TestKeys(t *testing.T) {
	for _, bad := range []string{`{}`, `{"kty":"EC","crv":"P-384","x":"","y":""}`, `{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}`,
		`{"kty":"EC","crv":"P-256","x":"` + strings.Repeat("A", 43) + `","y":"` + strings.Repeat("A", 43) + `"}`} {
		if _, err := ParseVerificationKey([]byte(bad)); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParseVerificationKey(%s) = %v", bad, err)
		}
	}
	if _, err := ParseSigningKeyPEM([]byte("nope")); !errors.Is(err, ErrBadKey) {
		t.Errorf("ParseSigningKeyPEM: %v", err)
	}
}

func FuzzUnseal(f *testing.F) {
	store, key, kek := setup(f)
	vault, _ := Seal(NewVault("kbs:///default/app/pw"), key, vkURI)
	env, _ := NewEnvelope("kbs:///default/kek/1", kek, []byte("x"), wrap.A256GCM)
	envelope, _ := Seal(env, key, vkURI)
	f.Add([]byte(vault))
	f.Add([]byte(envelope))
	f.Add([]byte("sealed.e30.e30.AA"))
	u := &Unsealer{KBS: store, SkipVerification: true}
	f.Fuzz(func(t *testing.T, secret []byte) {
		// Verification is skipped so the fuzzer reaches the payload parsers.
		_, err := u.Unseal(context.Background(), secret)
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsigned) && !errors.Is(err, ErrVersion) &&
			!errors.Is(err, ErrUnknownType) && !errors.Is(err, ErrUnsupportedProvider) && !errors.Is(err, wrap.ErrDecrypt) &&
			!errors.Is(err, wrap.ErrIVSize) && !errors.Is(err, errNotFound) && !errors.Is(err, wrap.ErrKeySize) {
			t.Fatalf("untyped error: %v", err)
		}
	})
}
