// Package store is a content-addressed blob store in a directory: layers
// pulled once are shared by every container that uses them and survive
// container restarts. Blobs are written under a temporary name and only
// renamed to their digest once a Verifier over the same bytes succeeded,
// so content is hashed once per pass.
package store

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
)

var (
	// ErrDigestMismatch: content does not hash to its expected digest.
	ErrDigestMismatch = errors.New("content digest mismatch")
	// ErrNotFound: no blob with that digest.
	ErrNotFound = errors.New("blob not found")
)

// Store keeps blobs under dir/blobs/sha256/<hex>.
type Store struct{ dir string }

// Open opens (creating) a store in dir.
func Open(dir string) (*Store, error) {
	for _, d := range []string{"blobs/sha256", "ingest"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	return &Store{dir: dir}, nil
}

func (s *Store) path(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", err
	}
	if d.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("unsupported digest algorithm %s", d.Algorithm())
	}
	return filepath.Join(s.dir, "blobs", "sha256", d.Encoded()), nil
}

// Open opens the blob d. Callers verify what they read: the store's disk
// is outside the image's trust chain.
func (s *Store) Open(d digest.Digest) (*os.File, error) {
	p, err := s.path(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, d)
	}
	return f, err
}

// Writer ingests blob d; see Writer.Commit.
func (s *Store) Writer(d digest.Digest) (*Writer, error) {
	p, err := s.path(d)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, "ingest"), d.Encoded()+"-*")
	if err != nil {
		return nil, err
	}
	return &Writer{f: f, final: p}, nil
}

// Writer writes one blob.
type Writer struct {
	f     *os.File
	final string
}

func (w *Writer) Write(p []byte) (int, error) { return w.f.Write(p) }

// Commit publishes the blob once v, which read the same bytes, verified
// them to the end; otherwise the ingest is discarded.
func (w *Writer) Commit(v *Verifier) error {
	defer w.Abort()
	if !v.Verified() {
		return fmt.Errorf("%w: content not verified", ErrDigestMismatch)
	}
	if err := w.f.Sync(); err != nil {
		return err
	}
	return os.Rename(w.f.Name(), w.final)
}

// Abort discards the ingest; harmless after Commit.
func (w *Writer) Abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}

// Verifier checks a stream against a digest and size as it is read; the
// final Read returns io.EOF only if both match.
type Verifier struct {
	r    io.Reader
	h    hash.Hash
	want digest.Digest
	size int64
	n    int64
	ok   bool
}

// Verified reports whether the whole stream was read and matched.
func (v *Verifier) Verified() bool { return v.ok }

// NewVerifier verifies r against d and size (size < 0: unknown).
func NewVerifier(r io.Reader, d digest.Digest, size int64) *Verifier {
	return &Verifier{r: r, h: d.Algorithm().Hash(), want: d, size: size}
}

func (v *Verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.size >= 0 && v.n > v.size {
		return n, fmt.Errorf("%w: more than %d bytes", ErrDigestMismatch, v.size)
	}
	if err == io.EOF {
		if v.size >= 0 && v.n != v.size {
			return n, fmt.Errorf("%w: %d bytes, want %d", ErrDigestMismatch, v.n, v.size)
		}
		if got := digest.NewDigest(v.want.Algorithm(), v.h); got != v.want {
			return n, fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, v.want)
		}
		v.ok = true
	}
	return n, err
}
