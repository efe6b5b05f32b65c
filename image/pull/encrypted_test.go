package pull

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/image/decrypt"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/containers/ocicrypt/blockcipher"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// keyring stands in for the data hub: the key provider annotation is an
// index into the options it holds.
type keyring [][]byte

func (k *keyring) UnwrapKey(_ context.Context, packet []byte) ([]byte, error) {
	for i, opts := range *k {
		if string(packet) == string(rune('a'+i)) {
			return bytes.Clone(opts), nil
		}
	}
	return nil, errors.New("unknown key")
}

// encrypt encrypts l with ocicrypt's block cipher as skopeo would; tamper
// may change the ciphertext or the options before they are published.
func (k *keyring) encrypt(t *testing.T, l imagetest.Layer, tamper func(ct []byte, opts *blockcipher.PrivateLayerBlockCipherOptions)) imagetest.Layer {
	t.Helper()
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		t.Fatal(err)
	}
	r, fin, err := h.Encrypt(bytes.NewReader(l.Blob), blockcipher.AES256CTR)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := fin()
	if err != nil {
		t.Fatal(err)
	}
	opts.Private.Digest = digest.FromBytes(l.Blob)
	if tamper != nil {
		tamper(ct, &opts.Private)
	}
	priv, _ := json.Marshal(opts.Private)
	pub, _ := json.Marshal(opts.Public)
	*k = append(*k, priv)
	return imagetest.Layer{MediaType: l.MediaType + "+encrypted", Blob: ct, DiffID: l.DiffID, Annotations: map[string]string{
		decrypt.AnnotationKeyProvider: base64.StdEncoding.EncodeToString([]byte{byte('a' + len(*k) - 1)}),
		decrypt.AnnotationPubOpts:     base64.StdEncoding.EncodeToString(pub),
	}}
}

func TestPullEncrypted(t *testing.T) {
	e := newEnv(t)
	var k keyring
	big := strings.Repeat("model weights ", 300000) // several pipe and write blocks
	img := imagetest.New(t, ocispec.ImageConfig{},
		k.encrypt(t, imagetest.GzipLayer(t, imagetest.File("model.bin", big, 0o600), imagetest.File("etc/x", "x", 0o644)), nil),
		imagetest.GzipLayer(t, imagetest.File("etc/.wh.x", "", 0)),
		k.encrypt(t, imagetest.ZstdLayer(t, imagetest.File("bin/app", "#!/bin/sh\n", 0o755)), nil))
	e.reg.Push(t, img, "cocoon/enc:v1", nil)
	dir := filepath.Join(e.parent, "bundle")
	var last Progress
	if _, err := e.puller(Options{Unwrapper: &k, Progress: func(p Progress) { last = p }}).Pull(context.Background(), "example.com/cocoon/enc:v1", dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "rootfs/model.bin")); err != nil || string(b) != big {
		t.Fatalf("model.bin: %d bytes, %v", len(b), err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "rootfs/etc/x")); !os.IsNotExist(err) {
		t.Fatalf("whiteout over a decrypted layer: %v", err)
	}
	if !last.Finished || last.LayersDone != 3 || last.Done != last.Total {
		t.Fatalf("last progress %+v", last)
	}
	if _, err := e.puller(Options{}).Pull(context.Background(), "example.com/cocoon/enc:v1", filepath.Join(e.parent, "nokey")); !errors.Is(err, ErrNoUnwrapper) {
		t.Fatalf("no unwrapper: %v", err)
	}
	os.RemoveAll(filepath.Join(e.parent, "nokey"))
}

func TestPullEncryptedTampered(t *testing.T) {
	layer := func(t *testing.T) imagetest.Layer {
		return imagetest.GzipLayer(t, imagetest.File("data", strings.Repeat("secret ", 200000), 0o600))
	}
	for name, tc := range map[string]struct {
		tamper func(ct []byte, opts *blockcipher.PrivateLayerBlockCipherOptions)
		want   error
	}{
		// The registry serves what the manifest names, but the HMAC over
		// the ciphertext fails.
		"ciphertext": {func(ct []byte, _ *blockcipher.PrivateLayerBlockCipherOptions) { ct[len(ct)/2] ^= 1 }, decrypt.ErrIntegrity},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			var k keyring
			l := k.encrypt(t, layer(t), tc.tamper)
			e.reg.Push(t, imagetest.New(t, ocispec.ImageConfig{}, l), "cocoon/enc:v1", nil)
			_, err := e.puller(Options{Unwrapper: &k}).Pull(context.Background(), "example.com/cocoon/enc:v1", filepath.Join(e.parent, "bundle"))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			e.assertNothingLeft(t, 0)
		})
	}
}
