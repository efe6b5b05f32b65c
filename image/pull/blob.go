package pull

import (
	"context"
	"fmt"
	"io"

	"github.com/cocoon-cc/cocoon/image/store"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// blobRetries is how often a broken blob download resumes.
const blobRetries = 3

// verifiedBlob reads a blob from the registry through a verifier.
type verifiedBlob struct {
	*store.Verifier
	src io.ReadCloser
}

func (p *Puller) blob(ctx context.Context, s *source, desc ocispec.Descriptor) (*verifiedBlob, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	body, err := s.openBlob(ctx, desc.Digest, blobRetries, p.o.Backoff.Duration)
	if err != nil {
		return nil, err
	}
	return &verifiedBlob{Verifier: store.NewVerifier(body, desc.Digest, desc.Size), src: body}, nil
}

// Check reads what is left and checks the digest.
func (b *verifiedBlob) Check() error {
	if err := drain(b.Verifier); err != nil {
		return err
	}
	if !b.Verified() {
		return fmt.Errorf("%w: blob not read to its end", store.ErrDigestMismatch)
	}
	return nil
}

// Close releases the blob.
func (b *verifiedBlob) Close() error { return b.src.Close() }
