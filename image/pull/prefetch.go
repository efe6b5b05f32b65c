package pull

import (
	"context"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// defaultConcurrentDownloads is the default of
// Options.MaxConcurrentDownloads (guest-components' CDH uses 3 too).
const defaultConcurrentDownloads = 3

// prefetcher downloads and verifies the layers after the first into the
// content store while the earlier ones are unpacked: layers must be
// applied in order, but their downloads need not wait for that.
type prefetcher struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   map[digest.Digest]chan struct{}
}

func (p *Puller) prefetch(ctx context.Context, s *source, layers []ocispec.Descriptor) *prefetcher {
	ctx, cancel := context.WithCancel(ctx)
	f := &prefetcher{cancel: cancel, done: map[digest.Digest]chan struct{}{}}
	n := p.o.MaxConcurrentDownloads
	if n <= 0 {
		n = defaultConcurrentDownloads
	}
	sem := make(chan struct{}, n)
	for i, l := range layers {
		if _, dup := f.done[l.Digest]; dup || i == 0 {
			continue // the first layer streams straight into the rootfs
		}
		ch := make(chan struct{})
		f.done[l.Digest] = ch
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer close(ch)
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				return
			}
			p.download(ctx, s, l)
		}()
	}
	return f
}

// download stores one verified blob. A failure is left for the in-order
// pass, which fetches the layer again and reports the error in context.
func (p *Puller) download(ctx context.Context, s *source, desc ocispec.Descriptor) {
	b, err := p.blob(ctx, s, desc)
	if err != nil {
		return
	}
	defer b.Close()
	// A plain writer, so that io.CopyBuffer reads in readBuffer blocks.
	if _, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, b, make([]byte, readBuffer)); err == nil {
		b.Finish()
	}
}

// wait blocks until layer d's download has ended (or was never started).
func (f *prefetcher) wait(ctx context.Context, d digest.Digest) error {
	ch, ok := f.done[d]
	if !ok {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop cancels the downloads still running and waits for them.
func (f *prefetcher) stop() {
	f.cancel()
	f.wg.Wait()
}
