package pull

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/cocoon-cc/cocoon/image/store"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// blobRetries is how often a broken blob download resumes.
const blobRetries = 3

// verifiedBlob reads a blob through a verifier, from the content store
// when it holds it, else from the registry while writing it to the store.
type verifiedBlob struct {
	*store.Verifier
	src io.ReadCloser
	w   *store.Writer // nil when read from the store
}

func (p *Puller) blob(ctx context.Context, s *source, desc ocispec.Descriptor) (*verifiedBlob, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	if f, err := p.store.Open(desc.Digest); err == nil {
		return &verifiedBlob{Verifier: store.NewVerifier(f, desc.Digest, desc.Size), src: f}, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	body, err := s.openBlob(ctx, desc.Digest, blobRetries, p.o.Backoff.Duration)
	if err != nil {
		return nil, err
	}
	w, err := p.store.Writer(desc.Digest)
	if err != nil {
		body.Close()
		return nil, err
	}
	v := store.NewVerifier(io.TeeReader(body, w), desc.Digest, desc.Size)
	return &verifiedBlob{Verifier: v, src: body, w: w}, nil
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

// Finish checks the blob and publishes a download in the store.
func (b *verifiedBlob) Finish() error {
	if err := b.Check(); err != nil {
		return err
	}
	if b.w == nil {
		return nil
	}
	err := b.w.Commit(b.Verifier)
	b.w = nil
	return err
}

// Close releases the blob, discarding an unfinished download.
func (b *verifiedBlob) Close() error {
	if b.w != nil {
		b.w.Abort()
	}
	return b.src.Close()
}
