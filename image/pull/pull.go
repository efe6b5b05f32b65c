// Package pull pulls an image inside the guest and extracts it into an
// OCI runtime bundle: each layer the layer store lacks goes in one
// streaming pass (download -> verify -> decrypt -> decompress -> verify
// diff_id -> untar, the parts of that pass on goroutines of their own)
// into a directory of its own, several layers at the same time; the
// bundle's rootfs is an overlay mount of the layers. Memory stays bounded
// by a few buffers per layer whatever the image size; nothing is left
// behind if any step fails.
package pull

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"slices"
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
	"github.com/opencontainers/image-spec/identity"
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

// defaultConcurrentDownloads is the default of
// Options.MaxConcurrentDownloads.
const defaultConcurrentDownloads = 3

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
	// MaxBytes bounds the uncompressed bytes one pull extracts, all its
	// layers together (those reused from the store do not count). 0: nine
	// tenths of the space the store's filesystem has left when the pull
	// starts (of the free memory on a filesystem without a size);
	// negative: no bound.
	MaxBytes int64
	// Transport is the base HTTP transport.
	Transport http.RoundTripper
	// Backoff is the retry policy for transient registry errors.
	Backoff remote.Backoff
	// MaxConcurrentDownloads bounds the layers fetched and extracted at
	// the same time (default 3, as guest-components' data hub).
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

// Puller pulls images through a layer store.
type Puller struct {
	store *store.Store
	o     Options
}

// New returns a Puller that keeps layers in s.
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
	Bytes    int64 // uncompressed bytes of the layers this pull extracted
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
	rep := newReporter(p.o.Progress, m)
	layers, err := p.layers(ctx, s, m, img, rep)
	if err != nil {
		return nil, err
	}
	if err := makeBundle(dir, layers, img.Config); err != nil {
		return nil, err
	}
	rep.finished()
	return img, nil
}

// makeBundle mounts the rootfs in dir over the layers and writes
// config.json; on error it leaves nothing behind.
func makeBundle(dir string, layers []string, config ocispec.Image) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	err := bundle.MountRootfs(dir, layers)
	if err == nil {
		err = bundle.Write(dir, config)
	}
	if err != nil {
		bundle.Remove(dir)
	}
	return err
}

// layerJob is one layer of a pull: found in the store, or extracted into
// an ingest directory while the other layers are.
type layerJob struct {
	desc   ocispec.Descriptor
	diffID digest.Digest
	chain  digest.Digest
	dir    string // the committed layer, or the ingest being extracted
	l      *unpack.Layer
	err    error
	done   chan struct{}
}

// layers brings every layer of m into the store and returns their
// directories, the lowest first. The layers the store lacks are fetched
// and extracted at the same time (MaxConcurrentDownloads at most), each
// into a directory of its own; then, in order, each is finished over the
// ones below it and committed.
func (p *Puller) layers(ctx context.Context, s *source, m *ocispec.Manifest, img *Image, rep *reporter) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	diffIDs := img.Config.RootFS.DiffIDs
	chains := identity.ChainIDs(slices.Clone(diffIDs))
	jobs := make([]*layerJob, len(m.Layers))
	var todo []*layerJob
	for i, desc := range m.Layers {
		j := &layerJob{desc: desc, diffID: diffIDs[i], chain: chains[i], done: make(chan struct{})}
		jobs[i] = j
		if dir, ok := p.store.Layer(j.chain); ok {
			if err := p.checkKey(ctx, desc); err != nil {
				return nil, fmt.Errorf("layer %d (%s): %w", i, desc.Digest, err)
			}
			j.dir = dir
			close(j.done)
			rep.layerDone()
			continue
		}
		todo = append(todo, j)
	}
	uo, err := p.unpackOptions()
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.extractAll(ctx, s, todo, rep, uo) })
	defer func() {
		cancel()
		wg.Wait()
		for _, j := range todo {
			if j.l != nil || j.err != nil {
				p.store.Abort(j.dir) // not committed
			}
		}
	}()
	dirs := make([]string, 0, len(jobs))
	for i, j := range jobs {
		select {
		case <-j.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if j.err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, j.desc.Digest, j.err)
		}
		if j.l != nil {
			lowers := slices.Clone(dirs)
			slices.Reverse(lowers)
			if err := j.l.Finish(lowers); err != nil {
				return nil, fmt.Errorf("layer %d (%s): %w", i, j.desc.Digest, err)
			}
			img.Bytes += j.l.Size
			dir, err := p.store.Commit(j.dir, j.chain)
			if err != nil {
				return nil, err
			}
			j.dir, j.l = dir, nil
		}
		dirs = append(dirs, j.dir)
	}
	return dirs, nil
}

// unpackOptions are the layers' options for one pull, with the budget of
// uncompressed bytes its layers share: MaxBytes, or by default nine tenths
// of what the layer store's filesystem has left now, so that a
// decompression bomb fails with unpack.ErrTooLarge before it fills the
// guest's memory (where the store lives unless a disk is mounted there).
func (p *Puller) unpackOptions() (unpack.Options, error) {
	uo := p.o.Unpack
	n := p.o.MaxBytes
	if n == 0 {
		avail, err := p.store.Available()
		if err != nil {
			return uo, fmt.Errorf("space left for layers: %w", err)
		}
		n = max(avail/10*9, 1)
	}
	if n > 0 {
		uo.Budget = unpack.NewBudget(n)
	}
	return uo, nil
}

// checkKey makes a pull that reuses an encrypted layer from the store get
// its key released as one that fetches it would: the KBS decides for
// every container.
func (p *Puller) checkKey(ctx context.Context, desc ocispec.Descriptor) error {
	if !decrypt.IsEncrypted(desc.MediaType) {
		return nil
	}
	if p.o.Unwrapper == nil {
		return ErrNoUnwrapper
	}
	return decrypt.CheckKey(ctx, desc, p.o.Unwrapper)
}

// extractAll extracts the jobs, in order, at most MaxConcurrentDownloads
// at a time; every job is done when it returns.
func (p *Puller) extractAll(ctx context.Context, s *source, jobs []*layerJob, rep *reporter, uo unpack.Options) {
	n := p.o.MaxConcurrentDownloads
	if n <= 0 {
		n = defaultConcurrentDownloads
	}
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, j := range jobs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			j.err = ctx.Err()
			close(j.done)
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			defer close(j.done)
			if j.dir, j.err = p.store.Ingest(); j.err != nil {
				return
			}
			j.l, j.err = p.layer(ctx, s, j.desc, j.diffID, j.dir, rep, uo)
			if j.err == nil {
				rep.layerDone()
			}
		})
	}
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
	return b.Check()
}

// layer streams one layer into dir.
func (p *Puller) layer(ctx context.Context, s *source, desc ocispec.Descriptor, diffID digest.Digest, dir string, rep *reporter, uo unpack.Options) (*unpack.Layer, error) {
	b, err := p.blob(ctx, s, desc)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	l, err := p.apply(ctx, rep.meter(b), desc, diffID, dir, uo)
	if err != nil {
		return nil, err
	}
	return l, b.Check()
}

// apply extracts the layer blob read from r (through the progress meter,
// when there is one) in stages on goroutines of their own, so that a pull
// uses every core: read and verify the blob; check its HMAC and decrypt
// it; inflate; verify the diff_id and untar (here). Only a stream that
// every check passed to its end makes apply succeed. (The blob's digest,
// in the manifest, pins the ciphertext and the HMAC binds it to the key:
// ocicrypt's digest of the plaintext would add a hash pass and no check.)
func (p *Puller) apply(ctx context.Context, r io.Reader, desc ocispec.Descriptor, diffID digest.Digest, dir string, uo unpack.Options) (*unpack.Layer, error) {
	var s stages
	in := s.add(nil, r, true, nil)
	mt := desc.MediaType
	if decrypt.IsEncrypted(mt) {
		if p.o.Unwrapper == nil {
			return nil, ErrNoUnwrapper
		}
		l, err := decrypt.NewLayer(ctx, desc, in, p.o.Unwrapper)
		if err != nil {
			return nil, err
		}
		in = s.add(in, l, true, nil)
		mt = decrypt.PlainMediaType(mt)
	}
	tarStream := s.inflate(in, mt)
	end := &eofReader{r: tarStream}
	diff := store.NewVerifier(end, diffID, -1)
	s.start()
	l, err := unpack.Apply(ctx, dir, diff, uo)
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
			return nil, fmt.Errorf("%w (after: %v)", verr, err)
		}
		return nil, err
	}
	return l, nil
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
