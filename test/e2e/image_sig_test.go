package e2e

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/image/pull"
	"github.com/cocoon-cc/cocoon/image/registry"
	"github.com/cocoon-cc/cocoon/image/signature"
	"github.com/cocoon-cc/cocoon/image/store"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// cosignKey makes a key pair with cosign (sigstore's own tool) when it is
// on PATH, else with cosignsign, which writes the same attachment; it
// returns a function that signs an image (a tag) with that key, naming
// identity (cosign's default: the repository), and the public key.
func cosignKey(t *testing.T) (sign func(image, identity string), public []byte) {
	t.Helper()
	dir := t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	if cosign, err := exec.LookPath("cosign"); err == nil {
		run(cosign, "generate-key-pair", "--output-key-prefix", filepath.Join(dir, "cosign"))
		sign = func(image, identity string) {
			args := []string{"sign", "--key", filepath.Join(dir, "cosign.key"), "--tlog-upload=false", "--allow-http-registry", "-y", image}
			if repo := image[:strings.LastIndex(image, ":")]; identity != repo { // cosign's default names the repository
				args = append(args, "--sign-container-identity", identity)
			}
			run(cosign, args...)
		}
	} else {
		t.Log("cosign not on PATH: signing with image/imagetest/cosignsign")
		tool := filepath.Join(dir, "cosignsign")
		build := exec.Command("go", "build", "-o", tool, "./image/imagetest/cosignsign")
		build.Dir = testutil.RepoRoot(t)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build cosignsign: %v\n%s", err, out)
		}
		run(tool, "generate-key-pair", dir)
		sign = func(image, identity string) { run(tool, filepath.Join(dir, "cosign.key"), image, identity) }
	}
	public, err := os.ReadFile(filepath.Join(dir, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	return sign, public
}

// TestSignedImagePull: an image signed with a sigstore key (the cosign
// attachment in the registry) is pulled under a policy requiring that key;
// an unsigned one and one signed with another key are refused before any
// layer is fetched, leaving nothing behind.
func TestSignedImagePull(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	img := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}, imagetest.GzipLayer(t, imagetest.File("hello", "hi\n", 0o644)))
	for _, repo := range []string{"team/signed:1", "team/unsigned:1", "team/other:1", "public/app:1"} {
		reg.Push(t, img, repo, nil)
	}
	sign, public := cosignKey(t)
	sign(reg.Host+"/team/signed:1", reg.Host+"/team/signed:1")
	signOther, _ := cosignKey(t)
	signOther(reg.Host+"/team/other:1", reg.Host+"/team/other:1")

	doc := fmt.Sprintf(`{"default":[{"type":"reject"}],"transports":{"docker":{
		%q:[{"type":"sigstoreSigned","keyData":%q}],
		%q:[{"type":"insecureAcceptAnything"}]}}}`,
		reg.Host+"/team", base64.StdEncoding.EncodeToString(public), reg.Host+"/public")
	pol, err := signature.ParsePolicy([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := pull.New(st, pull.Options{Policy: pol})
	for repo, want := range map[string]error{
		"team/signed:1":   nil,
		"public/app:1":    nil,
		"team/unsigned:1": signature.ErrSignatureRequired,
		"team/other:1":    signature.ErrSignatureInvalid,
	} {
		dir := filepath.Join(imagetest.BundleDir(t), "bundle")
		_, err := p.Pull(context.Background(), reg.Host+"/"+repo, dir)
		if !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", repo, err, want)
		}
		if _, statErr := os.Stat(filepath.Join(dir, "rootfs", "hello")); (statErr == nil) != (want == nil) {
			t.Errorf("%s: rootfs present = %v", repo, statErr == nil)
		}
	}
}

// TestAuthenticatedPull: a registry that needs credentials is pulled from
// with an auth.json (what [image] authenticated_registry_credentials_uri
// names); wrong or missing credentials fail with ErrUnauthorized.
func TestAuthenticatedPull(t *testing.T) {
	reg := imagetest.StartRegistryWithAuth(t, "owner", "s3cret")
	img := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}, imagetest.GzipLayer(t, imagetest.File("hello", "hi\n", 0o644)))
	reg.Push(t, img, "private/app:1", nil, "--dest-creds", "owner:s3cret")
	auth := func(user, pass string) *registry.AuthFile {
		a, err := registry.ParseAuthFile([]byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Host,
			base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fast := remote.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 1}
	for name, kc := range map[string]authn.Keychain{"right": auth("owner", "s3cret"), "wrong": auth("owner", "guess"), "none": nil} {
		_, err := pull.New(st, pull.Options{Keychain: kc, Backoff: fast}).Pull(context.Background(), reg.Host+"/private/app:1",
			filepath.Join(imagetest.BundleDir(t), "bundle"))
		if (name == "right") != (err == nil) || (err != nil && !errors.Is(err, pull.ErrUnauthorized)) {
			t.Errorf("%s credentials: %v", name, err)
		}
	}
	if _, err := registry.ParseAuthFile([]byte("{")); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("bad auth.json: %v", err)
	}
}

// gpgKey makes a GPG signing key in a new GNUPGHOME; env selects it for
// gpg and skopeo, public is its armored public key.
func gpgKey(t *testing.T, email string) (env []string, public []byte) {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("SKIP: gpg not installed (scripts/install-deps.sh installs it)")
	}
	env = []string{"GNUPGHOME=" + t.TempDir()}
	gen := exec.Command("gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", email, "ed25519", "sign", "never")
	gen.Env = append(os.Environ(), env...)
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("gpg: %v\n%s", err, out)
	}
	export := exec.Command("gpg", "--armor", "--export", email)
	export.Env = gen.Env
	public, err := export.Output()
	if err != nil {
		t.Fatal(err)
	}
	return env, public
}

// TestGPGSignedImagePull: skopeo copy --sign-by (GPG through gpgme) signs
// an image into a lookaside directory served over HTTP; a signedBy policy
// with the signer's public key accepts it and refuses an unsigned image
// and a signature by another key.
func TestGPGSignedImagePull(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	img := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}, imagetest.GzipLayer(t, imagetest.File("hello", "hi\n", 0o644)))
	lookaside := t.TempDir()
	srv := httptest.NewServer(http.FileServer(http.Dir(lookaside)))
	defer srv.Close()
	regd := t.TempDir()
	os.WriteFile(filepath.Join(regd, "default.yaml"), []byte("default-docker:\n  lookaside-staging: file://"+lookaside+"\n"), 0o600)
	env, public := gpgKey(t, "owner@cocoon.test")
	otherEnv, _ := gpgKey(t, "other@cocoon.test")
	reg.Push(t, img, "team/signed:1", env, "--registries.d", regd, "--sign-by", "owner@cocoon.test")
	reg.Push(t, img, "team/other:1", otherEnv, "--registries.d", regd, "--sign-by", "other@cocoon.test")
	reg.Push(t, img, "team/unsigned:2", nil)

	pol, err := signature.ParsePolicy([]byte(fmt.Sprintf(`{"default":[{"type":"reject"}],"transports":{"docker":{%q:[
		{"type":"signedBy","keyType":"GPGKeys","keyData":%q}]}}}`, reg.Host+"/team", base64.StdEncoding.EncodeToString(public))))
	if err != nil {
		t.Fatal(err)
	}
	la, err := signature.ParseLookaside([]byte("default-docker:\n  lookaside: " + srv.URL + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := pull.New(st, pull.Options{Policy: pol, Lookaside: la})
	for repo, want := range map[string]error{
		"team/signed:1":   nil,
		"team/other:1":    signature.ErrSignatureInvalid,
		"team/unsigned:2": signature.ErrSignatureRequired,
	} {
		_, err := p.Pull(context.Background(), reg.Host+"/"+repo, filepath.Join(imagetest.BundleDir(t), "bundle"))
		if !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", repo, err, want)
		}
	}
}
