// Package pull pulls an image inside the guest and unpacks it into an OCI
// runtime bundle in one streaming pass per layer: download (or read from
// the content store) -> verify -> decrypt -> decompress -> verify diff_id
// -> untar, the three parts of that pass on goroutines of their own, while
// the next layers download into the content store. Memory stays bounded by
// a few buffers whatever the image size; nothing is left behind if any step
// fails.
package pull

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cocoon-cc/cocoon/image/bundle"
	"github.com/cocoon-cc/cocoon/image/decrypt"
	"github.com/cocoon-cc/cocoon/image/registry"
	"github.com/cocoon-cc/cocoon/image/signature"
	"github.com/cocoon-cc/cocoon/image/store"
	"github.com/cocoon-cc/cocoon/image/unpack"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var (
	// ErrRegistry: the registry failed or refused a request.
	ErrRegistry = errors.New("registry error")
	// ErrUnauthorized: the registry refused the credentials, or pulls
	// without them; it is an ErrRegistry.
	ErrUnauthorized = fmt.Errorf("%w: access denied", ErrRegistry)
	// ErrManifest: a malformed or unsupported manifest or config.
	ErrManifest = errors.New("bad manifest")
	// ErrNoPlatform: the index has no manifest for the platform.
	ErrNoPlatform = errors.New("no manifest for platform")
	// ErrMediaType: a layer media type Cocoon cannot unpack.
	ErrMediaType = errors.New("unsupported layer media type")
	// ErrNoUnwrapper: an encrypted layer but no key unwrapper.
	ErrNoUnwrapper = errors.New("encrypted layer and no key unwrapper configured")
	// ErrBundleExists: the bundle directory already has content.
	ErrBundleExists = errors.New("bundle directory is not empty")
	// ErrTrailingData: data after a layer's tar archive beyond padding.
	ErrTrailingData = errors.New("trailing data after layer archive")
)

// maxTrailing bounds what may follow a tar's end-of-archive marker
// (record padding is at most 10 KiB).
const maxTrailing = 1 << 20

// readBuffer is the size of the reads through a layer's pipeline.
const readBuffer = 1 << 20

// Options configure a Puller.
type Options struct {
	// Registries is the registries.conf; nil pulls from the named registry.
	Registries *registry.Config
	// Keychain finds registry credentials (e.g. a registry.AuthFile).
	Keychain authn.Keychain
	// Unwrapper unwraps encrypted layers' keys (the data hub).
	Unwrapper decrypt.KeyUnwrapper
	// Platform selects from multi-platform indexes (default linux/amd64).
	Platform ocispec.Platform
	// Unpack limits what layers may contain.
	Unpack unpack.Options
	// Transport is the base HTTP transport.
	Transport http.RoundTripper
	// Backoff is the retry policy for transient registry errors.
	Backoff remote.Backoff
	// MaxConcurrentDownloads bounds the layers downloaded ahead of the one
	// being unpacked (default 3).
	MaxConcurrentDownloads int
	// HostLoopback is where a registry on the host's loopback (127.0.0.1,
	// localhost) is reached from the guest (10.0.2.2 on QEMU's user
	// network); the image keeps its name for the policy.
	HostLoopback string
	// Policy, if set, is the image signature policy every image must
	// satisfy before any of its layers is fetched; Keys fetches the
	// public keys it names by kbs:/// URI.
	Policy *signature.Policy
	Keys   func(ctx context.Context, uri string) ([]byte, error)
	// Lookaside locates GPG signatures (signedBy); nil: none.
	Lookaside *signature.Lookaside
	// Log receives what the operator should know (an image pulled without
	// a signature policy); nil discards.
	Log *slog.Logger
	// Progress, if set, is called as the layers are pulled (at most every
	// 200 ms while a layer streams, after each layer and at the end).
	Progress func(Progress)
}

// Puller pulls images through a content store.
type Puller struct {
	store *store.Store
	o     Options
}

// New returns a Puller that keeps blobs in s.
func New(s *store.Store, o Options) *Puller {
	if o.Platform.OS == "" {
		o.Platform = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Transport == nil {
		o.Transport = http.DefaultTransport
	}
	if o.Backoff.Steps == 0 {
		o.Backoff = remote.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 4}
	}
	return &Puller{store: s, o: o}
}

// Image is what a pull produced.
type Image struct {
	Manifest digest.Digest
	Config   ocispec.Image
	Bytes    int64 // uncompressed layer bytes
}

// Pull pulls ref and writes an OCI runtime bundle (rootfs and config.json)
// to dir, trying registries.conf's sources in order.
func (p *Puller) Pull(ctx context.Context, ref, dir string) (*Image, error) {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrBundleExists, dir)
	}
	srcs, err := p.o.Registries.Sources(ref)
	if err != nil {
		return nil, err
	}
	named, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	var errs []error
	for _, s := range srcs {
		if s.Ref, err = p.viaHostLoopback(s.Ref); err != nil {
			return nil, err
		}
		img, err := p.pullFrom(ctx, named, s, dir)
		if err == nil {
			return img, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", s.Ref, err))
		if !errors.Is(err, ErrRegistry) {
			break // content errors are not a mirror's fault
		}
	}
	return nil, errors.Join(errs...)
}

// viaHostLoopback points a reference to the host's loopback at
// HostLoopback.
func (p *Puller) viaHostLoopback(ref name.Reference) (name.Reference, error) {
	reg := ref.Context().RegistryStr()
	host, port, _ := strings.Cut(reg, ":")
	if p.o.HostLoopback == "" || (host != "127.0.0.1" && host != "localhost") {
		return ref, nil
	}
	if port != "" {
		port = ":" + port
	}
	return name.ParseReference(p.o.HostLoopback + port + strings.TrimPrefix(ref.Name(), reg))
}

// pullFrom pulls from one source; named is the reference as the user
// wrote it, which the signature policy's scopes and identities match.
func (p *Puller) pullFrom(ctx context.Context, named name.Reference, src registry.Source, dir string) (*Image, error) {
	s, err := p.connect(ctx, src.Ref)
	if err != nil {
		return nil, err
	}
	m, md, top, err := p.manifest(ctx, s)
	if err != nil {
		return nil, err
	}
	if p.o.Policy == nil {
		// Upstream's behaviour: no policy, no check; said so, every time.
		p.o.Log.WarnContext(ctx, "no image signature policy: image accepted without signature verification", "image", named.Name(), "digest", top)
	} else if err := p.o.Policy.Verify(ctx, named, top, &sigSource{p: p, s: s, d: top, named: named}); err != nil {
		return nil, err
	}
	img := &Image{Manifest: md}
	if err := p.config(ctx, s, m.Config, &img.Config); err != nil {
		return nil, err
	}
	if len(img.Config.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("%w: %d layers, %d diff_ids", ErrManifest, len(m.Layers), len(img.Config.RootFS.DiffIDs))
	}
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dir)), filepath.Base(dir)+".partial-")
	if err != nil {
		return nil, err
	}
	if err := p.build(ctx, s, m, img, tmp); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	os.Remove(dir) // an empty placeholder; rename fails if it has content
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return img, nil
}

func (p *Puller) build(ctx context.Context, s *source, m *ocispec.Manifest, img *Image, tmp string) error {
	if err := os.Chmod(tmp, 0o700); err != nil {
		return err
	}
	rootfs := filepath.Join(tmp, bundle.RootfsDir)
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	rep := newReporter(p.o.Progress, m)
	pf := p.prefetch(ctx, s, m.Layers)
	defer pf.stop()
	for i, l := range m.Layers {
		if err := pf.wait(ctx, l.Digest); err != nil {
			return err
		}
		n, err := p.layer(ctx, s, l, img.Config.RootFS.DiffIDs[i], rootfs, rep)
		if err != nil {
			return fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
		}
		img.Bytes += n
		rep.layerDone()
	}
	if err := bundle.Write(tmp, img.Config); err != nil {
		return err
	}
	rep.finished()
	return nil
}

// config fetches and decodes the image config.
func (p *Puller) config(ctx context.Context, s *source, desc ocispec.Descriptor, out *ocispec.Image) error {
	if desc.Size > 4<<20 {
		return fmt.Errorf("%w: config of %d bytes", ErrManifest, desc.Size)
	}
	b, err := p.blob(ctx, s, desc)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := json.NewDecoder(b).Decode(out); err != nil {
		return fmt.Errorf("%w: config: %w", ErrManifest, err)
	}
	return b.Finish()
}

// layer streams one layer into rootfs and returns its uncompressed size.
func (p *Puller) layer(ctx context.Context, s *source, desc ocispec.Descriptor, diffID digest.Digest, rootfs string, rep *reporter) (int64, error) {
	b, err := p.blob(ctx, s, desc)
	if err != nil {
		return 0, err
	}
	defer b.Close()
	n, err := p.apply(ctx, rep.meter(b), desc, diffID, rootfs)
	if err != nil {
		return n, err
	}
	return n, b.Finish()
}

// apply unpacks the layer blob read from r (through the progress meter,
// when there is one) in stages on goroutines of their own, so that a pull
// uses every core: read and verify the blob; check its HMAC and decrypt
// it; verify the plaintext digest; inflate; verify the diff_id and untar
// (here). Only a stream that every check passed to its end makes apply
// succeed.
func (p *Puller) apply(ctx context.Context, r io.Reader, desc ocispec.Descriptor, diffID digest.Digest, rootfs string) (int64, error) {
	var s stages
	in := s.add(nil, r, true, nil)
	mt := desc.MediaType
	if decrypt.IsEncrypted(mt) {
		if p.o.Unwrapper == nil {
			return 0, ErrNoUnwrapper
		}
		l, err := decrypt.NewLayer(ctx, desc, in, p.o.Unwrapper)
		if err != nil {
			return 0, err
		}
		in = s.add(in, l, true, nil)
		in = s.add(in, store.NewVerifier(in, l.Digest, -1), true, nil)
		mt = decrypt.PlainMediaType(mt)
	}
	tarStream := s.inflate(in, mt)
	end := &eofReader{r: tarStream}
	diff := store.NewVerifier(end, diffID, -1)
	s.start()
	n, err := unpack.Apply(ctx, rootfs, diff, p.o.Unpack)
	if err == nil {
		// Tar padding, then the diff_id and every check upstream.
		if err = drain(diff); end.eof && errors.Is(err, store.ErrDigestMismatch) {
			err = fmt.Errorf("diff_id: %w", err)
		}
	}
	s.stop()
	if err != nil {
		// Corrupt or forged data breaks the decompressor or the tar reader
		// before the checks at the end of the blob: say what happened.
		if verr := s.verifyErr(); verr != nil && !errors.Is(err, verr) {
			return n, fmt.Errorf("%w (after: %v)", verr, err)
		}
	}
	return n, err
}

// stages are the goroutines of one layer's pipeline.
type stages struct {
	wg    sync.WaitGroup
	pipes []*pipe
	runs  []func()
}

// add makes a stage that copies r, which reads from the pipe in (if any),
// into a new pipe; then judges the outcome (see pipe.pump). A verifying
// stage reads its input to the end even once the stages below it have
// stopped, so that its verdict can explain their failure.
func (s *stages) add(in *pipe, r io.Reader, verifying bool, then func(error) error) *pipe {
	out := newPipe()
	out.drain = verifying
	s.pipes = append(s.pipes, out)
	s.runs = append(s.runs, func() {
		if in != nil {
			defer in.Close()
		}
		out.pump(r, then)
	})
	return out
}

// inflate decompresses in, then refuses more than padding after the
// compressed stream.
func (s *stages) inflate(in *pipe, mediaType string) *pipe {
	// Large reads upstream: decompressors read a few KiB at a time.
	br := bufio.NewReaderSize(in, readBuffer)
	lr := &lazyReader{open: func() (io.Reader, func(), error) { return decompress(mediaType, br) }}
	return s.add(in, lr, false, func(err error) error {
		lr.close()
		if err == nil {
			err = drain(br)
		}
		return err
	})
}

func (s *stages) start() {
	for _, run := range s.runs {
		s.wg.Go(run)
	}
}

// stop ends the stages still running and waits for them: closing the last
// pipe ends its stage, which closes its input pipe in turn, and so on up.
func (s *stages) stop() {
	s.pipes[len(s.pipes)-1].Close()
	s.wg.Wait()
}

// verifyErr is the first verification failure of a stopped pipeline.
func (s *stages) verifyErr() error {
	for _, p := range s.pipes {
		if errors.Is(p.err, store.ErrDigestMismatch) || errors.Is(p.err, decrypt.ErrIntegrity) {
			return p.err
		}
	}
	return nil
}

// lazyReader opens its reader on first use, in the goroutine reading it:
// a decompressor reads its header when it is made.
type lazyReader struct {
	open    func() (io.Reader, func(), error)
	r       io.Reader
	closeFn func()
}

func (l *lazyReader) Read(p []byte) (int, error) {
	if l.r == nil {
		r, closeFn, err := l.open()
		if err != nil {
			return 0, err
		}
		l.r, l.closeFn = r, closeFn
	}
	return l.r.Read(p)
}

func (l *lazyReader) close() {
	if l.closeFn != nil {
		l.closeFn()
	}
}

// eofReader tells whether r ended: then an error above it is not r's.
type eofReader struct {
	r   io.Reader
	eof bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.eof = e.eof || err == io.EOF
	return n, err
}

// drain reads r to its end so its verifiers run, refusing more than
// padding.
func drain(r io.Reader) error {
	n, err := io.Copy(io.Discard, io.LimitReader(r, maxTrailing+1))
	if err != nil {
		return err
	}
	if n > maxTrailing {
		return ErrTrailingData
	}
	return nil
}

func decompress(mediaType string, r io.Reader) (io.Reader, func(), error) {
	switch mediaType {
	case ocispec.MediaTypeImageLayer:
		return r, func() {}, nil
	case ocispec.MediaTypeImageLayerGzip, dockerLayerGzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case ocispec.MediaTypeImageLayerZstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(64<<20))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	}
	return nil, nil, fmt.Errorf("%w: %q", ErrMediaType, mediaType)
}
