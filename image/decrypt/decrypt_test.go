package decrypt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/containers/ocicrypt/blockcipher"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeUnwrapper stands in for the data hub: it knows one packet and
// answers it with optsdata, or refuses as a KBS would.
type fakeUnwrapper struct {
	opts []byte
	err  error
}

func (f fakeUnwrapper) UnwrapKey(_ context.Context, packet []byte) ([]byte, error) {
	if f.err != nil {
		return nil, f.err
	}
	if string(packet) != "packet" {
		return nil, errors.New("unknown packet")
	}
	return bytes.Clone(f.opts), nil
}

// encrypt encrypts plain with ocicrypt's own block cipher and returns the
// ciphertext, the descriptor annotations ocicrypt writes and the optsdata.
func encrypt(t *testing.T, plain []byte) ([]byte, ocispec.Descriptor, []byte) {
	t.Helper()
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		t.Fatal(err)
	}
	r, fin, err := h.Encrypt(bytes.NewReader(plain), blockcipher.AES256CTR)
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
	opts.Private.Digest = digest.FromBytes(plain)
	priv, _ := json.Marshal(opts.Private)
	pub, _ := json.Marshal(opts.Public)
	desc := ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageLayerGzip + "+encrypted",
		Annotations: map[string]string{
			AnnotationKeyProvider: base64.StdEncoding.EncodeToString([]byte("bad")) + "," +
				base64.StdEncoding.EncodeToString([]byte("packet")),
			AnnotationPubOpts: base64.StdEncoding.EncodeToString(pub),
		},
	}
	return ct, desc, priv
}

func TestDecryptOcicryptLayer(t *testing.T) {
	plain := make([]byte, 1<<20+17)
	rand.Read(plain)
	ct, desc, opts := encrypt(t, plain)
	l, err := NewLayer(context.Background(), desc, bytes.NewReader(ct), fakeUnwrapper{opts: opts})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(l)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Fatal("plaintext or digest differs")
	}
}

func TestDecryptTampered(t *testing.T) {
	plain := bytes.Repeat([]byte("layer"), 10000)
	ct, desc, opts := encrypt(t, plain)
	ct[len(ct)/2] ^= 1
	l, err := NewLayer(context.Background(), desc, bytes.NewReader(ct), fakeUnwrapper{opts: opts})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(l); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("err = %v, want ErrIntegrity", err)
	}
}

func TestDecryptErrors(t *testing.T) {
	ct, desc, opts := encrypt(t, []byte("x"))
	ctx := context.Background()
	if _, err := NewLayer(ctx, desc, bytes.NewReader(ct), fakeUnwrapper{err: errors.New("attestation refused")}); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("refused key: %v", err)
	}
	noKey := desc
	noKey.Annotations = map[string]string{AnnotationPubOpts: desc.Annotations[AnnotationPubOpts]}
	if _, err := NewLayer(ctx, noKey, bytes.NewReader(ct), fakeUnwrapper{opts: opts}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no key annotation: %v", err)
	}
	badCipher := desc
	badCipher.Annotations = map[string]string{
		AnnotationKeyProvider: desc.Annotations[AnnotationKeyProvider],
		AnnotationPubOpts:     base64.StdEncoding.EncodeToString([]byte(`{"cipher":"ROT13"}`)),
	}
	if _, err := NewLayer(ctx, badCipher, bytes.NewReader(ct), fakeUnwrapper{opts: opts}); !errors.Is(err, ErrOptions) {
		t.Fatalf("unknown cipher: %v", err)
	}
	if _, err := NewLayer(ctx, desc, bytes.NewReader(ct), fakeUnwrapper{opts: []byte(`{"symkey":"AAAA"}`)}); !errors.Is(err, ErrOptions) {
		t.Fatalf("short key: %v", err)
	}
}

func TestMediaTypes(t *testing.T) {
	mt := "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
	if !IsEncrypted(mt) || PlainMediaType(mt) != ocispec.MediaTypeImageLayerGzip || IsEncrypted(ocispec.MediaTypeImageLayer) {
		t.Fatal("media type handling")
	}
}
