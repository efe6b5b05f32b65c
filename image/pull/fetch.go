package pull

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker media types that share the OCI formats.
const (
	dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	dockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	dockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// retryCodes are the transient HTTP statuses worth retrying.
var retryCodes = []int{http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
	http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout}

// source is one registry repository a pull reads from.
type source struct {
	ref  name.Reference
	auth authn.Authenticator
	rt   http.RoundTripper // authenticated, for blobs
	base http.RoundTripper
}

func (p *Puller) connect(ctx context.Context, ref name.Reference) (*source, error) {
	kc := p.o.Keychain
	if kc == nil {
		kc = authn.NewMultiKeychain()
	}
	auth, err := kc.Resolve(ref.Context())
	if err != nil {
		return nil, err
	}
	base := transport.NewRetry(p.o.Transport, transport.WithRetryBackoff(p.o.Backoff),
		transport.WithRetryStatusCodes(retryCodes...))
	rt, err := transport.NewWithContext(ctx, ref.Context().Registry, auth, base, []string{ref.Context().Scope(transport.PullScope)})
	if err != nil {
		return nil, registryError(err, "%s", ref.Context().RegistryStr())
	}
	return &source{ref: ref, auth: auth, rt: rt, base: base}, nil
}

// registryError wraps a registry failure: ErrUnauthorized when the
// registry refused the credentials (or their absence), else ErrRegistry.
func registryError(err error, format string, args ...any) error {
	kind := ErrRegistry
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		kind = ErrUnauthorized
	}
	return fmt.Errorf("%w: %s: %w", kind, fmt.Sprintf(format, args...), err)
}

func (p *Puller) remoteOptions(ctx context.Context, s *source) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(s.auth), remote.WithTransport(s.base),
		remote.WithRetryBackoff(p.o.Backoff), remote.WithRetryStatusCodes(retryCodes...)}
}

// manifest resolves the reference to an image manifest for the platform;
// top is the digest the reference resolved to first (an index's, for a
// multi-platform image), which signatures sign.
func (p *Puller) manifest(ctx context.Context, s *source) (m *ocispec.Manifest, md, top digest.Digest, err error) {
	opts := p.remoteOptions(ctx, s)
	ref := s.ref
	for range 2 { // an index, then the manifest it names
		d, err := remote.Get(ref, opts...)
		if err != nil {
			return nil, "", "", registryError(err, "get manifest %s", ref)
		}
		dg := digest.Digest(d.Digest.String())
		if top == "" {
			top = dg
		}
		switch string(d.MediaType) {
		case ocispec.MediaTypeImageIndex, dockerManifestList:
			var idx ocispec.Index
			if err := json.Unmarshal(d.Manifest, &idx); err != nil {
				return nil, "", "", fmt.Errorf("%w: index: %w", ErrManifest, err)
			}
			m, err := p.selectPlatform(idx)
			if err != nil {
				return nil, "", "", err
			}
			ref = s.ref.Context().Digest(m.String())
		case ocispec.MediaTypeImageManifest, dockerManifest:
			var m ocispec.Manifest
			if err := json.Unmarshal(d.Manifest, &m); err != nil {
				return nil, "", "", fmt.Errorf("%w: %w", ErrManifest, err)
			}
			return &m, dg, top, nil
		default:
			return nil, "", "", fmt.Errorf("%w: manifest media type %q", ErrManifest, d.MediaType)
		}
	}
	return nil, "", "", fmt.Errorf("%w: index names another index", ErrManifest)
}

func (p *Puller) selectPlatform(idx ocispec.Index) (digest.Digest, error) {
	want := p.o.Platform
	for _, m := range idx.Manifests {
		pl := m.Platform
		if pl != nil && pl.OS == want.OS && pl.Architecture == want.Architecture &&
			(want.Variant == "" || pl.Variant == want.Variant) {
			return m.Digest, nil
		}
	}
	return "", fmt.Errorf("%w: %s/%s", ErrNoPlatform, want.OS, want.Architecture)
}

// blobReader reads a blob, resuming with a Range request when the
// connection breaks mid-stream.
type blobReader struct {
	ctx     context.Context
	s       *source
	d       digest.Digest
	body    io.ReadCloser
	off     int64
	retries int
	backoff time.Duration
}

func (s *source) openBlob(ctx context.Context, d digest.Digest, retries int, backoff time.Duration) (*blobReader, error) {
	b := &blobReader{ctx: ctx, s: s, d: d, retries: retries, backoff: backoff}
	if err := b.request(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *blobReader) request() error {
	repo := b.s.ref.Context()
	url := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), b.d)
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	want := http.StatusOK
	if b.off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", b.off))
		want = http.StatusPartialContent
	}
	resp, err := b.s.rt.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("%w: get blob %s: %w", ErrRegistry, b.d, err)
	}
	if err := transport.CheckError(resp, want); err != nil {
		resp.Body.Close()
		return registryError(err, "get blob %s", b.d)
	}
	b.body = resp.Body
	return nil
}

func (b *blobReader) Read(p []byte) (int, error) {
	for {
		n, err := b.body.Read(p)
		b.off += int64(n)
		if err == nil || err == io.EOF {
			return n, err
		}
		if b.retries == 0 || b.ctx.Err() != nil {
			return n, fmt.Errorf("%w: blob %s at byte %d: %w", ErrRegistry, b.d, b.off, err)
		}
		b.body.Close()
		b.retries--
		time.Sleep(b.backoff)
		if rerr := b.request(); rerr != nil {
			return n, errors.Join(err, rerr)
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (b *blobReader) Close() error { return b.body.Close() }
