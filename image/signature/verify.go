package signature

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

// Signature is a sigstore signature as stored in a registry: the simple
// signing payload and the base64 signature over it.
type Signature struct {
	Payload   []byte
	Signature string
}

// Source gives what verification needs from outside: the image's
// sigstore signatures, its GPG (simple signing) signatures and keys named
// by URI (kbs:///...: released after attestation).
type Source interface {
	Signatures(ctx context.Context) ([]Signature, error)
	SimpleSignatures(ctx context.Context) ([][]byte, error)
	Key(ctx context.Context, uri string) ([]byte, error)
}

// payloadType is the critical type of a cosign simple signing payload.
const payloadType = "cosign container image signature"

// payload is the simple signing payload.
type payload struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
}

// Verify checks that the image ref, whose manifest (or index) digest is
// manifest, satisfies every requirement the policy sets for it.
func (p *Policy) Verify(ctx context.Context, ref name.Reference, manifest digest.Digest, src Source) error {
	var sigs []Signature
	fetched := false
	for _, r := range p.Requirements(ref) {
		if err := r.supported(); err != nil {
			return fmt.Errorf("%w: %s", err, ref)
		}
		switch r.Type {
		case InsecureAcceptAnything:
		case Reject:
			return fmt.Errorf("%w: %s", ErrRejected, ref)
		case SignedBy:
			simple, err := src.SimpleSignatures(ctx)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrSignatureRequired, ref, err)
			}
			if len(simple) == 0 {
				return fmt.Errorf("%w: %s has no GPG signature", ErrSignatureRequired, ref)
			}
			if err := r.verifySignedBy(ctx, ref, manifest, simple, src); err != nil {
				return err
			}
		case SigstoreSigned:
			if !fetched {
				var err error
				if sigs, err = src.Signatures(ctx); err != nil {
					return fmt.Errorf("%w: %s: %v", ErrSignatureRequired, ref, err)
				}
				fetched = true
			}
			if len(sigs) == 0 {
				return fmt.Errorf("%w: %s has no sigstore signature", ErrSignatureRequired, ref)
			}
			if err := r.verifySigstore(ctx, ref, manifest, sigs, src); err != nil {
				return err
			}
		}
	}
	return nil
}

// supported refuses what Cocoon parses but cannot check, rather than
// accepting it unchecked.
func (r Requirement) supported() error {
	switch {
	case r.Type == SignedBy && r.KeyType != "" && r.KeyType != "GPGKeys":
		return fmt.Errorf("%w: signedBy keyType %q", ErrUnsupported, r.KeyType)
	case len(r.Fulcio) > 0 || len(r.PKI) > 0:
		return fmt.Errorf("%w: sigstoreSigned with fulcio or pki certificates", ErrUnsupported)
	case r.RekorPublicKeyPath != "" || len(r.RekorPublicKeyPaths) > 0 || r.RekorPublicKeyData != "" || len(r.RekorPublicKeyDatas) > 0:
		return fmt.Errorf("%w: sigstoreSigned requiring a Rekor transparency log entry", ErrUnsupported)
	}
	return nil
}

// verifySigstore accepts when one signature is valid for one of the keys
// and names this manifest and an identity the requirement accepts.
func (r Requirement) verifySigstore(ctx context.Context, ref name.Reference, manifest digest.Digest, sigs []Signature, src Source) error {
	blobs, err := r.keyBlobs(ctx, src)
	if err != nil {
		return err
	}
	var keys []crypto.PublicKey
	for _, b := range blobs {
		k, err := ParsePublicKey(b)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	var errs []error
	for _, s := range sigs {
		for _, k := range keys {
			err := verifyOne(k, s, ref, manifest, r.SignedIdentity)
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		}
	}
	return fmt.Errorf("%w: %s: %w", ErrSignatureInvalid, ref, errors.Join(errs...))
}

// keyBlobs reads a requirement's keys: keyData and keyDatas (base64),
// keyPath and keyPaths (files, or kbs:/// resources the KBS releases after
// attestation).
func (r Requirement) keyBlobs(ctx context.Context, src Source) ([][]byte, error) {
	var blobs [][]byte
	for _, d := range append([]string{r.KeyData}, r.KeyDatas...) {
		if d == "" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(d)
		if err != nil {
			return nil, fmt.Errorf("%w: %s keyData: %v", ErrInvalidPolicy, r.Type, err)
		}
		blobs = append(blobs, b)
	}
	for _, p := range append([]string{r.KeyPath}, r.KeyPaths...) {
		if p == "" {
			continue
		}
		var b []byte
		var err error
		if strings.HasPrefix(p, "kbs://") {
			b, err = src.Key(ctx, p)
		} else {
			b, err = os.ReadFile(p)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s key %s: %w", ErrInvalidPolicy, r.Type, p, err)
		}
		blobs = append(blobs, b)
	}
	return blobs, nil
}

// ParsePublicKey reads a PEM (PKIX) public key.
func ParsePublicKey(raw []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%w: public key is not PEM", ErrInvalidPolicy)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrInvalidPolicy, err)
	}
	return key, nil
}

func verifyOne(key crypto.PublicKey, s Signature, ref name.Reference, manifest digest.Digest, id *Identity) error {
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil {
		return fmt.Errorf("signature is not base64: %v", err)
	}
	sum := sha256.Sum256(s.Payload)
	var ok bool
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, sum[:], sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig) == nil
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, s.Payload, sig)
	default:
		return fmt.Errorf("public key type %T", key)
	}
	if !ok {
		return errors.New("signature does not verify with the key")
	}
	var p payload
	if err := json.Unmarshal(s.Payload, &p); err != nil {
		return fmt.Errorf("payload: %v", err)
	}
	if p.Critical.Type != payloadType {
		return fmt.Errorf("payload type %q", p.Critical.Type)
	}
	if p.Critical.Image.DockerManifestDigest != manifest.String() {
		return fmt.Errorf("signature is for %s, not %s", p.Critical.Image.DockerManifestDigest, manifest)
	}
	return matchIdentity(ref, p.Critical.Identity.DockerReference, id)
}
