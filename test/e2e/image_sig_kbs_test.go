package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/crane"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/image/pull"
	"github.com/cocoon-cc/cocoon/image/signature"
	cdhpb "github.com/cocoon-cc/cocoon/protocol/ttrpc/cdh"
)

// TestSignedImagesFromKBS: the data hub (confidential-data-hub over
// ttrpc, as the kata agent calls it) pulls from a registry that needs
// credentials; the signature policy, the cosign and GPG public keys, the
// lookaside configuration and the registry's auth.json are all kbs:///
// resources a real KBS releases after attestation. Each image is decided
// by its most specific scope before any layer is fetched; a tampered
// image carrying the original's signature, an unsigned image and a
// rejected tag are refused with typed errors, and nothing is left behind.
func TestSignedImagesFromKBS(t *testing.T) {
	e := newCDHEnv(t)
	reg := imagetest.StartRegistryWithAuth(t, "owner", "s3cret")
	authJSON := func(pass string) []byte {
		return []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Host, base64.StdEncoding.EncodeToString([]byte("owner:"+pass))))
	}
	// The owner's tools (skopeo, cosign) authenticate with the same auth.json.
	docker := t.TempDir()
	if err := os.WriteFile(filepath.Join(docker, "config.json"), authJSON("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", docker)
	creds := []string{"--dest-creds", "owner:s3cret"}

	img := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}, imagetest.GzipLayer(t, imagetest.File("hello", "hi\n", 0o644)))
	evil := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}, imagetest.GzipLayer(t, imagetest.File("hello", "pwned\n", 0o644)))
	sign, cosignPub := cosignKey(t)
	for _, repo := range []string{"team/app:1", "team/app:blocked", "team/tampered:1"} {
		reg.Push(t, img, repo, nil, creds...)
		sign(reg.Host+"/"+repo, reg.Host+"/"+repo)
	}
	// cosign's default identity, the repository alone: matchRepository
	// accepts it, matchRepoDigestOrExact (team/exact) does not.
	for _, repo := range []string{"team/repo:1", "team/exact/app:1"} {
		reg.Push(t, img, repo, nil, creds...)
		sign(reg.Host+"/"+repo, reg.Host+"/"+strings.TrimSuffix(repo, ":1"))
	}
	reg.Push(t, img, "team/unsigned:1", nil, creds...)
	reg.Push(t, img, "public/app:1", nil, creds...)
	reg.Push(t, img, "elsewhere/app:1", nil, creds...)
	tamper(t, reg, "team/tampered", "1", evil, creds)

	// GPG: skopeo --sign-by writes to a lookaside directory the owner
	// publishes over HTTP.
	gpgEnv, gpgPub := gpgKey(t, "owner@cocoon.test")
	lookaside := t.TempDir()
	srv := httptest.NewServer(http.FileServer(http.Dir(lookaside)))
	defer srv.Close()
	regd := t.TempDir()
	os.WriteFile(filepath.Join(regd, "default.yaml"), []byte("default-docker:\n  sigstore-staging: file://"+lookaside+"\n"), 0o600)
	reg.Push(t, img, "team/gpg/app:1", gpgEnv, append(creds, "--registries.d", regd, "--sign-by", "owner@cocoon.test")...)

	e.set(t, "default/security-policy/e2e", []byte(fmt.Sprintf(`{"default":[{"type":"reject"}],"transports":{"docker":{
		%[1]q:[{"type":"sigstoreSigned","keyPath":"kbs:///default/cosign-key/e2e","signedIdentity":{"type":"matchRepository"}}],
		%[2]q:[{"type":"reject"}],
		%[3]q:[{"type":"signedBy","keyType":"GPGKeys","keyPath":"kbs:///default/gpg-key/e2e"}],
		%[4]q:[{"type":"insecureAcceptAnything"}],
		%[5]q:[{"type":"sigstoreSigned","keyPath":"kbs:///default/cosign-key/e2e"}]}}}`,
		reg.Host+"/team", reg.Host+"/team/app:blocked", reg.Host+"/team/gpg", reg.Host+"/public", reg.Host+"/team/exact")))
	e.set(t, "default/cosign-key/e2e", cosignPub)
	e.set(t, "default/gpg-key/e2e", gpgPub)
	e.set(t, "default/sigstore-config/e2e", []byte("default-docker:\n  sigstore: "+srv.URL+"\n"))
	e.set(t, "default/registry-auth/e2e", authJSON("s3cret"))
	e.set(t, "default/registry-auth/wrong", authJSON("guess"))

	base, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	useCredentials := func(name string) {
		conf := fmt.Sprintf("%s\n[image]\nwork_dir = %q\nimage_security_policy_uri = \"kbs:///default/security-policy/e2e\"\n"+
			"sigstore_config_uri = \"kbs:///default/sigstore-config/e2e\"\n"+
			"authenticated_registry_credentials_uri = \"kbs:///default/registry-auth/%s\"\n", base, work, name)
		if err := os.WriteFile(e.cfg, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	useCredentials("e2e")
	c := cdhpb.NewImagePullServiceClient(e.startCDH(t))
	parent := imagetest.BundleDir(t)
	for repo, want := range map[string]error{
		"team/app:1":       nil,
		"team/repo:1":      nil,
		"team/exact/app:1": signature.ErrSignatureInvalid, // signed for the repository, not the tag
		"team/gpg/app:1":   nil,                           // the more specific scope: a GPG signature, no cosign one
		"public/app:1":     nil,
		"team/app:blocked": signature.ErrRejected, // signed, but its tag scope rejects
		"team/unsigned:1":  signature.ErrSignatureRequired,
		"team/tampered:1":  signature.ErrSignatureInvalid, // the original's signature, another manifest
		"elsewhere/app:1":  signature.ErrRejected,         // no scope: the default
	} {
		bundle := filepath.Join(parent, strings.NewReplacer("/", "-", ":", "-").Replace(repo))
		_, err := c.PullImage(context.Background(), &cdhpb.ImagePullRequest{ImageUrl: reg.Host + "/" + repo, BundlePath: bundle})
		if want == nil {
			if err != nil {
				t.Errorf("%s: %v", repo, err)
			} else if b, err := os.ReadFile(filepath.Join(bundle, "rootfs/hello")); string(b) != "hi\n" {
				t.Errorf("%s: rootfs/hello %q %v", repo, b, err)
			}
			continue
		}
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), want.Error()) {
			t.Errorf("%s: %v, want PermissionDenied: %v", repo, err, want)
		}
		if _, err := os.Stat(bundle); !os.IsNotExist(err) {
			t.Errorf("%s: bundle left behind: %v", repo, err)
		}
	}

	// Credentials the registry refuses: a typed error (cdh-oneshot reads
	// the configuration anew).
	useCredentials("wrong")
	out, err := oneshot(t, e, "pull-image", "--quiet", "--image-url", reg.Host+"/public/app:1", "--bundle-path", filepath.Join(parent, "wrong"))
	if err == nil || !strings.Contains(err.Error(), pull.ErrUnauthorized.Error()) {
		t.Fatalf("wrong credentials: %v %s", err, out)
	}
}

// tamper replaces the image at repo:tag by img and attaches the
// original's cosign signature to it, as an attacker controlling the
// registry would.
func tamper(t *testing.T, reg *imagetest.Registry, repo, tag string, img *imagetest.Image, creds []string) {
	t.Helper()
	opt := crane.WithAuthFromKeychain(authn.DefaultKeychain)
	ref := reg.Host + "/" + repo
	orig, err := crane.Digest(ref+":"+tag, opt)
	if err != nil {
		t.Fatal(err)
	}
	reg.Push(t, img, repo+":"+tag, nil, creds...)
	now, err := crane.Digest(ref+":"+tag, opt)
	if err != nil || now == orig {
		t.Fatalf("tampered digest %s (original %s): %v", now, orig, err)
	}
	sigTag := func(d string) string { return ref + ":" + strings.Replace(d, ":", "-", 1) + ".sig" }
	if err := crane.Copy(sigTag(orig), sigTag(now), opt); err != nil {
		t.Fatal(err)
	}
}
