package signature

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

// signer is a cosign-style key pair.
type signer struct {
	key *ecdsa.PrivateKey
	pem []byte
}

func newSigner(t testing.TB) signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return signer{k, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})}
}

func (s signer) sign(t testing.TB, ref string, d digest.Digest) Signature {
	payload := fmt.Sprintf(`{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":%q},"optional":null}`,
		ref, d, payloadType)
	sum := sha256.Sum256([]byte(payload))
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return Signature{Payload: []byte(payload), Signature: base64.StdEncoding.EncodeToString(sig)}
}

// fixed serves given signatures and keys.
type fixed struct {
	sigs   []Signature
	simple [][]byte
	keys   map[string][]byte
}

func (f fixed) Signatures(context.Context) ([]Signature, error)    { return f.sigs, nil }
func (f fixed) SimpleSignatures(context.Context) ([][]byte, error) { return f.simple, nil }
func (f fixed) Key(_ context.Context, uri string) ([]byte, error) {
	if k, ok := f.keys[uri]; ok {
		return k, nil
	}
	return nil, errors.New("no such key")
}

func policyWith(t testing.TB, doc string) *Policy {
	t.Helper()
	p, err := ParsePolicy([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sigstore(keyPEM []byte, identity string) string {
	id := ""
	if identity != "" {
		id = fmt.Sprintf(`,"signedIdentity":{"type":%q}`, identity)
	}
	return fmt.Sprintf(`{"type":"sigstoreSigned","keyData":%q%s}`, base64.StdEncoding.EncodeToString(keyPEM), id)
}

func TestVerify(t *testing.T) {
	owner, other := newSigner(t), newSigner(t)
	d := digest.FromString("manifest")
	const ref = "registry.example:5000/team/app:1"
	p := policyWith(t, fmt.Sprintf(`{"default":[{"type":"reject"}],"transports":{"docker":{
		"registry.example:5000/team":[%s],
		"registry.example:5000/team/public":[{"type":"insecureAcceptAnything"}]}}}`, sigstore(owner.pem, "")))
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ref  string
		sigs []Signature
		want error
	}{
		{"signed", ref, []Signature{owner.sign(t, ref, d)}, nil},
		{"one of several", ref, []Signature{other.sign(t, ref, d), owner.sign(t, ref, d)}, nil},
		{"unsigned", ref, nil, ErrSignatureRequired},
		{"other key", ref, []Signature{other.sign(t, ref, d)}, ErrSignatureInvalid},
		{"other manifest", ref, []Signature{owner.sign(t, ref, digest.FromString("x"))}, ErrSignatureInvalid},
		{"other tag", ref, []Signature{owner.sign(t, "registry.example:5000/team/app:2", d)}, ErrSignatureInvalid},
		{"by digest, signed tag", "registry.example:5000/team/app@" + d.String(), []Signature{owner.sign(t, ref, d)}, nil},
		{"public scope", "registry.example:5000/team/public/x:1", nil, nil},
		{"default rejects", "elsewhere.example/app:1", []Signature{owner.sign(t, "elsewhere.example/app:1", d)}, ErrRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := name.ParseReference(tc.ref)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Verify(ctx, r, d, fixed{sigs: tc.sigs})
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
	tampered := owner.sign(t, ref, d)
	tampered.Payload[10] ^= 1
	r, _ := name.ParseReference(ref)
	if err := p.Verify(ctx, r, d, fixed{sigs: []Signature{tampered}}); !errors.Is(err, ErrSignatureInvalid) {
		t.Fatalf("tampered payload: %v", err)
	}
}

func TestIdentities(t *testing.T) {
	owner := newSigner(t)
	d := digest.FromString("m")
	ctx := context.Background()
	ref, _ := name.ParseReference("reg.example/app:1")
	sig := owner.sign(t, "reg.example/app:2", d)
	for identity, ok := range map[string]bool{MatchRepository: true, MatchExact: false, MatchRepoDigestOrExact: false} {
		p := policyWith(t, fmt.Sprintf(`{"default":[%s]}`, sigstore(owner.pem, identity)))
		if err := p.Verify(ctx, ref, d, fixed{sigs: []Signature{sig}}); (err == nil) != ok {
			t.Errorf("%s: %v", identity, err)
		}
	}
	// A key held by the KBS.
	p := policyWith(t, `{"default":[{"type":"sigstoreSigned","keyPath":"kbs:///default/keys/cosign"}]}`)
	src := fixed{sigs: []Signature{owner.sign(t, "reg.example/app:1", d)}, keys: map[string][]byte{"kbs:///default/keys/cosign": owner.pem}}
	if err := p.Verify(ctx, ref, d, src); err != nil {
		t.Fatalf("kbs key: %v", err)
	}
}

func TestScopes(t *testing.T) {
	r, _ := name.ParseReference("a.b.example.com:5000/ns/sub/repo:tag")
	got := scopeCandidates(r)
	want := []string{"a.b.example.com:5000/ns/sub/repo:tag", "a.b.example.com:5000/ns/sub/repo", "a.b.example.com:5000/ns/sub",
		"a.b.example.com:5000/ns", "a.b.example.com:5000", "*.b.example.com", "*.example.com", "*.com", ""}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("scopes\n got %q\nwant %q", got, want)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	for name, doc := range map[string]string{
		"not json":         "{",
		"no default":       `{"transports":{}}`,
		"empty default":    `{"default":[]}`,
		"unknown type":     `{"default":[{"type":"trustMe"}]}`,
		"unknown field":    `{"default":[{"type":"reject"}],"extra":1}`,
		"two keys":         `{"default":[{"type":"sigstoreSigned","keyPath":"/a","keyData":"b"}]}`,
		"no key":           `{"default":[{"type":"sigstoreSigned"}]}`,
		"unknown identity": `{"default":[{"type":"sigstoreSigned","keyPath":"/a","signedIdentity":{"type":"remapIdentity"}}]}`,
		"empty scope":      `{"default":[{"type":"reject"}],"transports":{"docker":{"x":[]}}}`,
		"signedBy no key":  `{"default":[{"type":"signedBy","keyType":"GPGKeys"}]}`,
	} {
		if _, err := ParsePolicy([]byte(doc)); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: %v", name, err)
		}
	}
	p := policyWith(t, `{"default":[{"type":"signedBy","keyType":"X509Certificates","keyPath":"/k"}]}`)
	r, _ := name.ParseReference("reg.example/app:1")
	if err := p.Verify(context.Background(), r, digest.FromString("m"), fixed{simple: [][]byte{{1}}}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("signedBy X509: %v", err)
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{"r/x":[{"type":"reject"}]}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v", err)
			}
			return
		}
		r, _ := name.ParseReference("reg.example/app:1")
		p.Requirements(r)
	})
}

// FuzzVerifyPayload: any payload and signature bytes are refused with an
// error, never accepted, without a valid signature.
func FuzzVerifyPayload(f *testing.F) {
	s := newSigner(f)
	sig := s.sign(f, "reg.example/app:1", digest.FromString("m"))
	f.Add(sig.Payload, sig.Signature)
	p := policyWith(f, fmt.Sprintf(`{"default":[%s]}`, sigstore(s.pem, "")))
	r, _ := name.ParseReference("reg.example/app:1")
	f.Fuzz(func(t *testing.T, payload []byte, b64 string) {
		err := p.Verify(context.Background(), r, digest.FromString("m"), fixed{sigs: []Signature{{Payload: payload, Signature: b64}}})
		if err == nil && string(payload) != string(sig.Payload) {
			var js map[string]any
			if json.Unmarshal(payload, &js) != nil {
				t.Fatalf("accepted %q", payload)
			}
		}
	})
}

func FuzzParseLookaside(f *testing.F) {
	f.Add([]byte("default-docker:\n  lookaside: https://sigs.example/\ndocker:\n  reg.example/ns:\n    sigstore: http://x/\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLookaside(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v", err)
			}
			return
		}
		r, _ := name.ParseReference("reg.example/ns/app:1")
		l.URLs(r, digest.FromString("m"), 2)
	})
}

// FuzzSimpleSignature: arbitrary bytes as a GPG signature never panic the
// OpenPGP parsing and payload checks.
func FuzzSimpleSignature(f *testing.F) {
	e, err := openpgp.NewEntity("fuzz", "", "fuzz@cocoon.test", nil)
	if err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	w, _ := openpgp.Sign(&buf, e, nil, nil)
	w.Write([]byte(`{"critical":{"identity":{"docker-reference":"reg.example/app:1"},"image":{"docker-manifest-digest":"` +
		digest.FromString("m").String() + `"},"type":"atomic container signature"}}`))
	w.Close()
	f.Add(buf.Bytes())
	r, _ := name.ParseReference("reg.example/app:1")
	f.Fuzz(func(t *testing.T, sig []byte) {
		verifySimple(openpgp.EntityList{e}, sig, r, digest.FromString("m"), nil)
	})
}
