// Package decrypt decrypts image layers that ocicrypt (skopeo, buildah,
// nerdctl) encrypted for the attestation-agent key provider: the layer key
// is wrapped in the layer's key-provider annotation and unwrapped by the
// confidential data hub after attestation; the layer cipher is ocicrypt's
// AES_256_CTR_HMAC_SHA256.
package decrypt

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Annotations ocicrypt writes on an encrypted layer's descriptor.
const (
	AnnotationKeyProvider = "org.opencontainers.image.enc.keys.provider.attestation-agent"
	AnnotationPubOpts     = "org.opencontainers.image.enc.pubopts"
)

// CipherAES256CTR is the only layer cipher ocicrypt defines.
const CipherAES256CTR = "AES_256_CTR_HMAC_SHA256"

const encryptedSuffix = "+encrypted"

var (
	// ErrNoKey: the layer carries no attestation-agent key annotation.
	ErrNoKey = errors.New("encrypted layer has no attestation-agent key annotation")
	// ErrUnwrap: the key provider could not unwrap the layer key (e.g.
	// the KBS refused to release the key-encryption key).
	ErrUnwrap = errors.New("layer key unwrap failed")
	// ErrOptions: the layer's cipher options are malformed or unsupported.
	ErrOptions = errors.New("bad layer cipher options")
	// ErrIntegrity: the ciphertext's HMAC does not match (tampered layer
	// or wrong key).
	ErrIntegrity = errors.New("encrypted layer failed its HMAC check")
)

// KeyUnwrapper unwraps the layer's private options (optsdata) from the
// key-provider annotation packet (the decoded annotation value). The
// confidential data hub implements it.
type KeyUnwrapper interface {
	UnwrapKey(ctx context.Context, annotation []byte) ([]byte, error)
}

// IsEncrypted reports whether mediaType is an ocicrypt encrypted layer.
func IsEncrypted(mediaType string) bool { return strings.HasSuffix(mediaType, encryptedSuffix) }

// PlainMediaType strips the encryption suffix.
func PlainMediaType(mediaType string) string { return strings.TrimSuffix(mediaType, encryptedSuffix) }

// privateOpts and publicOpts are ocicrypt's LayerBlockCipherOptions halves.
type privateOpts struct {
	SymmetricKey  []byte            `json:"symkey"`
	CipherOptions map[string][]byte `json:"cipheroptions"`
}

type publicOpts struct {
	Cipher        string            `json:"cipher"`
	Hmac          []byte            `json:"hmac"`
	CipherOptions map[string][]byte `json:"cipheroptions"`
}

// Layer is a decrypting reader for one layer. (ocicrypt's options also
// carry the plaintext's digest; the HMAC, over ciphertext the manifest
// pins, already proves what it would.)
type Layer struct{ io.Reader }

// CheckKey tells whether ku releases desc's key now: a layer decrypted
// and extracted earlier is reused only when it would still be decrypted.
func CheckKey(ctx context.Context, desc ocispec.Descriptor, ku KeyUnwrapper) error {
	_, err := NewLayer(ctx, desc, nil, ku)
	return err
}

// NewLayer unwraps desc's key with ku and returns a reader of r's
// plaintext. Its HMAC is checked when the ciphertext is read to EOF; a
// mismatch is a read error wrapping ErrIntegrity, so the caller must read
// the whole stream before trusting anything it produced.
func NewLayer(ctx context.Context, desc ocispec.Descriptor, r io.Reader, ku KeyUnwrapper) (*Layer, error) {
	pub, err := publicOptions(desc)
	if err != nil {
		return nil, err
	}
	priv, err := unwrap(ctx, desc, ku)
	if err != nil {
		return nil, err
	}
	if len(priv.SymmetricKey) != 32 {
		return nil, fmt.Errorf("%w: key is %d bytes, want 32", ErrOptions, len(priv.SymmetricKey))
	}
	nonce := priv.CipherOptions["nonce"]
	if len(nonce) != aes.BlockSize {
		return nil, fmt.Errorf("%w: nonce is %d bytes, want %d", ErrOptions, len(nonce), aes.BlockSize)
	}
	block, _ := aes.NewCipher(priv.SymmetricKey) // the length is checked above
	return &Layer{
		Reader: &ctrReader{
			r:      r,
			stream: cipher.NewCTR(block, nonce),
			mac:    hmac.New(sha256.New, priv.SymmetricKey),
			want:   pub.Hmac,
		},
	}, nil
}

func publicOptions(desc ocispec.Descriptor) (*publicOpts, error) {
	var pub publicOpts
	s, ok := desc.Annotations[AnnotationPubOpts]
	if !ok {
		return nil, fmt.Errorf("%w: no %s annotation", ErrOptions, AnnotationPubOpts)
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: pubopts is not base64", ErrOptions)
	}
	if err := json.Unmarshal(raw, &pub); err != nil {
		return nil, fmt.Errorf("%w: pubopts is not JSON", ErrOptions)
	}
	if pub.Cipher != CipherAES256CTR {
		return nil, fmt.Errorf("%w: cipher %q", ErrOptions, pub.Cipher)
	}
	if len(pub.Hmac) != sha256.Size {
		return nil, fmt.Errorf("%w: hmac is %d bytes", ErrOptions, len(pub.Hmac))
	}
	return &pub, nil
}

// unwrap tries each packet of the annotation (ocicrypt joins several with
// commas) until one unwraps.
func unwrap(ctx context.Context, desc ocispec.Descriptor, ku KeyUnwrapper) (*privateOpts, error) {
	v := desc.Annotations[AnnotationKeyProvider]
	if v == "" {
		return nil, ErrNoKey
	}
	var errs []error
	for _, b64 := range strings.Split(v, ",") {
		packet, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: annotation is not base64", ErrOptions))
			continue
		}
		optsdata, err := ku.UnwrapKey(ctx, packet)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrUnwrap, err))
			continue
		}
		var priv privateOpts
		err = json.Unmarshal(optsdata, &priv)
		clear(optsdata)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: unwrapped options are not JSON", ErrOptions))
			continue
		}
		return &priv, nil
	}
	return nil, errors.Join(errs...)
}

// ctrReader decrypts AES-256-CTR and MACs the ciphertext as it goes.
type ctrReader struct {
	r      io.Reader
	stream cipher.Stream
	mac    hash.Hash
	want   []byte
	err    error
}

func (c *ctrReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	c.mac.Write(p[:n])
	c.stream.XORKeyStream(p[:n], p[:n])
	if err == io.EOF && !hmac.Equal(c.mac.Sum(nil), c.want) {
		err = ErrIntegrity
	}
	c.err = err
	return n, err
}
