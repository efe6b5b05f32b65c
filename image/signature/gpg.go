package signature

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

// simpleSigningType is the critical type of a GPG ("simple signing")
// signature's payload, as containers/image writes it.
const simpleSigningType = "atomic container signature"

// MaxSimpleSignature bounds one GPG signature.
const MaxSimpleSignature = 64 << 10

// verifySignedBy accepts when one GPG signature (an OpenPGP signed message
// whose content is the simple signing payload) verifies with the keyring
// and names this manifest and an identity the requirement accepts.
func (r Requirement) verifySignedBy(ctx context.Context, ref name.Reference, manifest digest.Digest, sigs [][]byte, src Source) error {
	ring, err := r.keyring(ctx, src)
	if err != nil {
		return err
	}
	var errs []error
	for _, sig := range sigs {
		err := verifySimple(ring, sig, ref, manifest, r.SignedIdentity)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrSignatureInvalid, ref, errors.Join(errs...))
}

// keyring reads the GPG public keyrings (armored or binary).
func (r Requirement) keyring(ctx context.Context, src Source) (openpgp.EntityList, error) {
	blobs, err := r.keyBlobs(ctx, src)
	if err != nil {
		return nil, err
	}
	var ring openpgp.EntityList
	for _, b := range blobs {
		keys, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(b))
		if err != nil {
			keys, err = openpgp.ReadKeyRing(bytes.NewReader(b))
		}
		if err != nil {
			return nil, fmt.Errorf("%w: GPG keyring: %v", ErrInvalidPolicy, err)
		}
		ring = append(ring, keys...)
	}
	if len(ring) == 0 {
		return nil, fmt.Errorf("%w: signedBy has no key", ErrInvalidPolicy)
	}
	return ring, nil
}

func verifySimple(ring openpgp.EntityList, sig []byte, ref name.Reference, manifest digest.Digest, id *Identity) error {
	md, err := openpgp.ReadMessage(bytes.NewReader(sig), ring, nil, nil)
	if err != nil {
		return fmt.Errorf("not an OpenPGP message: %v", err)
	}
	if !md.IsSigned || md.SignedBy == nil {
		return errors.New("not signed by a key of the policy")
	}
	body, err := io.ReadAll(io.LimitReader(md.UnverifiedBody, MaxSimpleSignature+1))
	if err != nil {
		return fmt.Errorf("signed content: %v", err)
	}
	// The signature is checked once the content has been read to its end.
	if md.SignatureError != nil {
		return fmt.Errorf("signature does not verify: %v", md.SignatureError)
	}
	if len(body) > MaxSimpleSignature {
		return errors.New("signed content too large")
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return fmt.Errorf("payload: %v", err)
	}
	if p.Critical.Type != simpleSigningType {
		return fmt.Errorf("payload type %q", p.Critical.Type)
	}
	if p.Critical.Image.DockerManifestDigest != manifest.String() {
		return fmt.Errorf("signature is for %s, not %s", p.Critical.Image.DockerManifestDigest, manifest)
	}
	return matchIdentity(ref, p.Critical.Identity.DockerReference, id)
}
