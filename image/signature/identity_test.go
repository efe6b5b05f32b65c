package signature

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

// TestMatchIdentity: signedIdentity as containers-policy.json(5) defines
// it; a signed name without a tag (what cosign writes) matches only the
// repository-level types.
func TestMatchIdentity(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	mirror := &Identity{Type: RemapIdentity, Prefix: "mirror.example:5000/vendor", SignedPrefix: "vendor.example"}
	for _, tc := range []struct {
		ref, signed string
		id          *Identity
		ok          bool
	}{
		{"reg.example/app:1", "reg.example/app:1", nil, true},
		{"reg.example/app:1", "reg.example/app:2", nil, false},
		{"reg.example/app:1", "reg.example/app", nil, false},
		{"reg.example/app@" + d, "reg.example/app:2", nil, true},
		{"reg.example/app@" + d, "reg.example/other:2", nil, false},
		{"reg.example/app@" + d, "reg.example/app", nil, false},
		{"reg.example/app:latest", "reg.example/app", &Identity{Type: MatchExact}, false},
		{"reg.example/app:1", "reg.example/app:1", &Identity{Type: MatchExact}, true},
		{"reg.example/app@" + d, "reg.example/app:1", &Identity{Type: MatchExact}, false},
		{"reg.example/app:1", "reg.example/app", &Identity{Type: MatchRepository}, true},
		{"reg.example/app:1", "reg.example/app2:1", &Identity{Type: MatchRepository}, false},
		{"mirror.example/app:1", "vendor.example/app:7", &Identity{Type: ExactReference, DockerReference: "vendor.example/app:7"}, true},
		{"mirror.example/app:1", "vendor.example/app:8", &Identity{Type: ExactReference, DockerReference: "vendor.example/app:7"}, false},
		{"mirror.example/app:1", "vendor.example/app", &Identity{Type: ExactRepository, DockerRepository: "vendor.example/app"}, true},
		{"mirror.example/app:1", "vendor.example/other:1", &Identity{Type: ExactRepository, DockerRepository: "vendor.example/app"}, false},
		{"mirror.example:5000/vendor/a/b:1", "vendor.example/a/b:1", mirror, true},
		{"mirror.example:5000/vendor/a/b:1", "vendor.example/a/b:2", mirror, false},
		{"mirror.example:5000/vendorx/a:1", "vendor.example/x/a:1", mirror, false},
		{"mirror.example:5000/other/a:1", "mirror.example:5000/other/a:1", mirror, true},
		// Docker Hub names in their fully expanded form.
		{"busybox:1", "docker.io/library/busybox:1", nil, true},
		{"index.docker.io/library/busybox:1", "busybox:1", nil, true},
	} {
		ref, err := name.ParseReference(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := matchIdentity(ref, tc.signed, tc.id); (err == nil) != tc.ok {
			t.Errorf("%s signed as %s under %+v: %v, want ok=%v", tc.ref, tc.signed, tc.id, err, tc.ok)
		}
	}
}

func TestIdentityCheck(t *testing.T) {
	for _, id := range []Identity{
		{Type: ExactReference, DockerReference: "reg.example/app"},
		{Type: ExactReference},
		{Type: ExactRepository, DockerRepository: "reg.example/app:1"},
		{Type: RemapIdentity, Prefix: "reg.example/ns:1", SignedPrefix: "other.example"},
		{Type: RemapIdentity, Prefix: "reg.example", SignedPrefix: "other.example/x@sha256:00"},
		{Type: RemapIdentity, Prefix: "", SignedPrefix: "other.example"},
		{Type: "remapEverything"},
	} {
		if err := id.check(); err == nil {
			t.Errorf("%+v accepted", id)
		}
	}
	for _, id := range []Identity{
		{Type: ExactReference, DockerReference: "reg.example/app:1"},
		{Type: ExactRepository, DockerRepository: "reg.example/app"},
		{Type: RemapIdentity, Prefix: "reg.example:5000", SignedPrefix: "docker.io/library"},
	} {
		if err := id.check(); err != nil {
			t.Errorf("%+v: %v", id, err)
		}
	}
}

// TestDockerHubScope: policy scopes name Docker Hub images in the fully
// expanded docker.io form.
func TestDockerHubScope(t *testing.T) {
	p := policyWith(t, `{"default":[{"type":"reject"}],"transports":{"docker":{"docker.io/library/busybox":[{"type":"insecureAcceptAnything"}]}}}`)
	for ref, want := range map[string]error{"busybox:1": nil, "docker.io/library/busybox:1": nil, "docker.io/library/alpine:1": ErrRejected} {
		r, _ := name.ParseReference(ref)
		if err := p.Verify(context.Background(), r, digest.FromString("m"), fixed{}); !errors.Is(err, want) || (err == nil) != (want == nil) {
			t.Errorf("%s: %v, want %v", ref, err, want)
		}
	}
}

// TestSigstoreKeys: keyDatas holds several keys (any one signs); certificate
// roots and Rekor requirements are refused as unsupported, not skipped.
func TestSigstoreKeys(t *testing.T) {
	a, b, c := newSigner(t), newSigner(t), newSigner(t)
	d := digest.FromString("m")
	r, _ := name.ParseReference("reg.example/app:1")
	ctx := context.Background()
	b64 := func(k []byte) string { return base64.StdEncoding.EncodeToString(k) }
	p := policyWith(t, fmt.Sprintf(`{"default":[{"type":"sigstoreSigned","keyDatas":[%q,%q]}]}`, b64(a.pem), b64(b.pem)))
	for i, s := range []signer{a, b, c} {
		err := p.Verify(ctx, r, d, fixed{sigs: []Signature{s.sign(t, r.Name(), d)}})
		if want := i < 2; (err == nil) != want || (!want && !errors.Is(err, ErrSignatureInvalid)) {
			t.Errorf("key %d: %v", i, err)
		}
	}
	for _, req := range []string{
		`{"type":"sigstoreSigned","fulcio":{"caData":"eA==","oidcIssuer":"https://x","subjectEmail":"a@b"},"rekorPublicKeyData":"eA=="}`,
		fmt.Sprintf(`{"type":"sigstoreSigned","keyData":%q,"rekorPublicKeyPath":"/rekor.pub"}`, b64(a.pem)),
		`{"type":"signedBy","keyType":"X509Certificates","keyPath":"/k"}`,
	} {
		p := policyWith(t, `{"default":[`+req+`]}`)
		if err := p.Verify(ctx, r, d, fixed{sigs: []Signature{a.sign(t, r.Name(), d)}}); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: %v", req, err)
		}
	}
}

// FuzzMatchIdentity: the identity a signature claims is the signer's
// text; any of it is matched or refused with an error, never a panic.
func FuzzMatchIdentity(f *testing.F) {
	f.Add("reg.example/app:1", "reg.example:5000/ns", "other.example")
	f.Add("docker.io/library/busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "docker.io", "x")
	ref, _ := name.ParseReference("reg.example:5000/ns/app:1")
	f.Fuzz(func(t *testing.T, signed, prefix, signedPrefix string) {
		for _, id := range []*Identity{nil, {Type: MatchExact}, {Type: MatchRepository},
			{Type: RemapIdentity, Prefix: prefix, SignedPrefix: signedPrefix}} {
			if id != nil && id.check() != nil {
				continue
			}
			if matchIdentity(ref, signed, id) == nil && (id == nil || id.Type != RemapIdentity) {
				if r, err := parseDockerRef(signed); err != nil || r.repo != "reg.example:5000/ns/app" {
					t.Fatalf("%q accepted for %s under %+v", signed, ref, id)
				}
			}
		}
	})
}
