// Package store keeps a guest's image layers, extracted, in a directory:
// a layer pulled once is shared by every container of the pod that uses
// it (each container's root is an overlay mount of them) and survives
// container restarts. Layers are named by their chain ID, which covers the
// layers below them (a layer's hard links may point into them), and are
// extracted into the store's ingest directory, then renamed into place
// once every check passed. The directory is trusted: it lives in the
// TEE's memory or on an encrypted scratch disk (the data hub's
// SecureMount), never on storage the host can change.
package store

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// ErrDigestMismatch: content does not hash to its expected digest.
var ErrDigestMismatch = errors.New("content digest mismatch")

// Store keeps layers under dir/layers/sha256/<chain ID>.
type Store struct{ dir string }

// Open opens (creating) a store in dir.
func Open(dir string) (*Store, error) {
	for _, d := range []string{"layers/sha256", "ingest"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	return &Store{dir: dir}, nil
}

func (s *Store) path(chain digest.Digest) (string, error) {
	if err := chain.Validate(); err != nil {
		return "", err
	}
	if chain.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("unsupported digest algorithm %s", chain.Algorithm())
	}
	return filepath.Join(s.dir, "layers", "sha256", chain.Encoded()), nil
}

// Layer returns the directory of the layer with that chain ID, if the
// store has it.
func (s *Store) Layer(chain digest.Digest) (string, bool) {
	p, err := s.path(chain)
	if err != nil {
		return "", false
	}
	fi, err := os.Stat(p)
	return p, err == nil && fi.IsDir()
}

// Ingest makes an empty directory to extract a layer into; Commit or
// Abort it.
func (s *Store) Ingest() (string, error) {
	return os.MkdirTemp(filepath.Join(s.dir, "ingest"), "layer-")
}

// Commit publishes an extracted layer under its chain ID and returns its
// directory. If a concurrent pull published it first, that copy is kept.
func (s *Store) Commit(ingest string, chain digest.Digest) (string, error) {
	p, err := s.path(chain)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(ingest, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(ingest, p); err != nil {
		if _, ok := s.Layer(chain); !ok {
			return "", err
		}
		os.RemoveAll(ingest)
	}
	return p, nil
}

// Abort discards an ingest directory.
func (s *Store) Abort(ingest string) { os.RemoveAll(ingest) }

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

// Available is what the store's filesystem has left for layers: the free
// space an unprivileged writer may use, or, on a filesystem with no size
// (the ramfs of an initramfs root), the memory the guest has free, where
// those files would land.
func (s *Store) Available() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return 0, err
	}
	if st.Blocks > 0 {
		return int64(st.Bavail) * st.Bsize, nil
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, err
	}
	return int64(si.Freeram+si.Bufferram) * int64(si.Unit), nil
}
