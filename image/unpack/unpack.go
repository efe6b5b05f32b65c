// Package unpack extracts OCI layer tar streams, each into a directory of
// its own in overlayfs format, the way containerd's overlay snapshotter
// and image-rs keep layers: whiteouts become 0/0 character devices and
// opaque directories carry trusted.overlay.opaque, so that a container's
// root filesystem is an overlay mount of the layers (bundle.MountRootfs)
// and every layer can be extracted at the same time as the others. Hard links,
// symlinks, xattrs and ownership are kept, with every path resolved inside
// the layer so that a hostile layer cannot write outside it.
package unpack

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	xattrPrefix    = "SCHILY.xattr."
	maxSymlinkHops = 40
	// overlayXattrs are overlayfs's own attributes: a layer may not set
	// them, since they would change how the mount reads its layers.
	overlayXattrs = "trusted.overlay."
	opaqueXattr   = overlayXattrs + "opaque"
)

var (
	// ErrPathTraversal: an entry name or hard-link target has a ".."
	// component.
	ErrPathTraversal = errors.New("tar entry path traversal")
	// ErrSymlinkEscape: an entry's path goes through a symlink that is
	// absolute or climbs above the root; following it on the host would
	// leave the rootfs.
	ErrSymlinkEscape = errors.New("tar entry path goes through an escaping symlink")
	// ErrDevice: a device node in a layer while devices are not allowed.
	ErrDevice = errors.New("device file in layer refused")
	// ErrTooLarge: the layer's (or the image's) uncompressed size exceeds
	// the limit.
	ErrTooLarge = errors.New("layer exceeds the uncompressed size limit")
	// ErrBadEntry: a malformed or unsupported tar entry.
	ErrBadEntry = errors.New("bad tar entry")
)

// Options tune Apply.
type Options struct {
	// MaxSize bounds the uncompressed tar stream (0: no limit).
	MaxSize int64
	// Budget, if set, bounds it too, shared with the other layers given
	// the same Budget.
	Budget *Budget
	// AllowDevices lets character and block devices be created.
	AllowDevices bool
}

// Layer is an extracted layer whose directory still waits for the layers
// below it: see Finish.
type Layer struct {
	// Dir is the layer's directory; Size its file bytes.
	Dir  string
	Size int64
	// links are hard links to files of lower layers; implicit the
	// directories made for entries whose parents the layer does not list.
	links    []hardlink
	implicit map[string]bool
}

type hardlink struct{ path, target string } // relative to the layer

// Apply extracts the tar stream r into dir, an empty directory for this
// layer alone. On error dir is left half-written: callers extract into a
// directory they discard on failure.
func Apply(ctx context.Context, dir string, r io.Reader, o Options) (*Layer, error) {
	if o.MaxSize > 0 {
		r = &limitReader{r: r, b: NewBudget(o.MaxSize)}
	}
	if o.Budget != nil {
		r = &limitReader{r: r, b: o.Budget}
	}
	a := &applier{root: dir, opts: o, chown: os.Geteuid() == 0, files: newFileCopier(),
		layer: &Layer{Dir: dir, implicit: map[string]bool{}}}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read tar: %w", err)
		}
		if err := a.entry(hdr, tr); err != nil {
			return nil, fmt.Errorf("%s: %w", hdr.Name, err)
		}
		a.layer.Size += hdr.Size
	}
	return a.layer, a.dirTimes()
}

type applier struct {
	root  string
	opts  Options
	chown bool
	files *fileCopier
	layer *Layer
	dirs  []dirTime // directory times are set last
}

type dirTime struct {
	path string
	hdr  *tar.Header
}

func (a *applier) entry(hdr *tar.Header, r io.Reader) error {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		return nil // the root itself keeps its own metadata
	}
	dir, base := path.Split(rel)
	parent, err := a.resolve(dir, true)
	if err != nil {
		return err
	}
	if base == opaqueMarker {
		// Hides the lower layers' content of the directory, not this one's.
		return unix.Lsetxattr(parent, opaqueXattr, []byte("y"), 0)
	}
	if name, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		if name == "" || name == "." || name == ".." {
			return fmt.Errorf("%w: whiteout %q", ErrBadEntry, base)
		}
		return whiteout(filepath.Join(parent, name))
	}
	target := filepath.Join(parent, base)
	// A directory where this layer whited out the lower one replaces it.
	replaces := hdr.Typeflag == tar.TypeDir && isWhiteout(target)
	if err := clearTarget(target, hdr.Typeflag == tar.TypeDir); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeDir {
		rel, _ := filepath.Rel(a.root, target)
		delete(a.layer.implicit, rel)
	}
	if err := a.create(target, hdr, r); err != nil {
		return err
	}
	if replaces {
		if err := unix.Lsetxattr(target, opaqueXattr, []byte("y"), 0); err != nil {
			return err
		}
	}
	return a.metadata(target, hdr)
}

// isWhiteout tells whether p is an overlay whiteout.
func isWhiteout(p string) bool {
	var st unix.Stat_t
	return unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// whiteout hides what lower layers have at p.
func whiteout(p string) error {
	if err := os.RemoveAll(p); err != nil {
		return err
	}
	return unix.Mknod(p, unix.S_IFCHR, 0)
}

// cleanName makes a tar name relative and refuses "..".
func cleanName(name string) (string, error) {
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", ErrPathTraversal
		}
	}
	rel := strings.TrimPrefix(path.Clean("/"+name), "/")
	return rel, nil
}

// resolve returns the host path of the directory rel inside the root,
// following symlinks as the container will see them and refusing those
// that would leave the root if followed on the host. Missing directories
// are created when create is set.
func (a *applier) resolve(rel string, create bool) (string, error) {
	comps := strings.Split(rel, "/")
	cur, hops := "", 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if cur == "" {
				return "", ErrSymlinkEscape
			}
			cur = strings.TrimSuffix(path.Dir(cur), ".")
			continue
		}
		next := path.Join(cur, c)
		host := filepath.Join(a.root, next)
		fi, err := os.Lstat(host)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := os.Mkdir(host, 0o755); err != nil {
				return "", err
			}
			a.layer.implicit[next] = true
		case err != nil:
			return "", err
		case fi.Mode()&fs.ModeSymlink != 0:
			if hops++; hops > maxSymlinkHops {
				return "", fmt.Errorf("%w: too many symlinks", ErrSymlinkEscape)
			}
			target, err := os.Readlink(host)
			if err != nil {
				return "", err
			}
			if path.IsAbs(target) {
				return "", fmt.Errorf("%w: %s -> %s", ErrSymlinkEscape, next, target)
			}
			comps = append(strings.Split(target, "/"), comps...)
			continue
		case !fi.IsDir():
			return "", fmt.Errorf("%w: %s is not a directory", ErrBadEntry, next)
		}
		cur = next
	}
	return filepath.Join(a.root, cur), nil
}

// clearTarget removes what is at target unless a directory replaces a directory.
func clearTarget(target string, dir bool) error {
	fi, err := os.Lstat(target)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if dir && fi.IsDir() {
		return nil
	}
	return os.RemoveAll(target)
}

func (a *applier) create(target string, hdr *tar.Header, r io.Reader) error {
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return nil
	case tar.TypeReg: // the reader turns TypeRegA into TypeReg
		return a.writeFile(target, hdr.Size, r)
	case tar.TypeSymlink:
		return os.Symlink(hdr.Linkname, target)
	case tar.TypeLink:
		return a.hardlink(target, hdr.Linkname)
	case tar.TypeFifo:
		return unix.Mkfifo(target, mode)
	case tar.TypeChar, tar.TypeBlock:
		if !a.opts.AllowDevices {
			return ErrDevice
		}
		kind := uint32(unix.S_IFCHR)
		if hdr.Typeflag == tar.TypeBlock {
			kind = unix.S_IFBLK
		}
		return unix.Mknod(target, kind|mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
	}
	return fmt.Errorf("%w: type %q", ErrBadEntry, hdr.Typeflag)
}

func (a *applier) writeFile(target string, size int64, r io.Reader) error {
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if size >= writeBuffer {
		// Allocating the extent up front spares the filesystem work per
		// write; where that is not supported the writes allocate as usual.
		_ = unix.Fallocate(int(f.Fd()), 0, 0, size)
	}
	if err := a.files.copy(f, r, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (a *applier) hardlink(target, linkname string) error {
	rel, err := cleanName(linkname)
	if err != nil {
		return err
	}
	dir, base := path.Split(rel)
	if base == "" {
		return fmt.Errorf("%w: hard link to the root", ErrBadEntry)
	}
	parent, err := a.resolve(dir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return a.lowerLink(target, rel)
	}
	if err != nil {
		return err
	}
	src := filepath.Join(parent, base)
	fi, err := os.Lstat(src)
	if errors.Is(err, fs.ErrNotExist) {
		return a.lowerLink(target, rel)
	}
	if err != nil {
		return fmt.Errorf("%w: hard link target: %w", ErrBadEntry, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("%w: hard link to a directory", ErrBadEntry)
	}
	// link(2) does not follow a symlink source: the link stays in the root.
	return os.Link(src, target)
}

// lowerLink leaves a hard link to a lower layer's file for Finish.
func (a *applier) lowerLink(target, rel string) error {
	p, _ := filepath.Rel(a.root, target)
	a.layer.links = append(a.layer.links, hardlink{path: p, target: rel})
	return nil
}

func (a *applier) metadata(target string, hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeLink {
		return nil // shares the inode's metadata
	}
	if a.chown {
		if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, xattrPrefix)
		if !ok {
			continue
		}
		if strings.HasPrefix(name, overlayXattrs) {
			return fmt.Errorf("%w: xattr %s", ErrBadEntry, name)
		}
		if err := unix.Lsetxattr(target, name, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
	}
	if hdr.Typeflag == tar.TypeSymlink {
		return lutimes(target, hdr)
	}
	// After chown, which clears set-id bits.
	if err := unix.Fchmodat(unix.AT_FDCWD, target, uint32(hdr.Mode&0o7777), 0); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeDir {
		a.dirs = append(a.dirs, dirTime{target, hdr})
		return nil
	}
	return lutimes(target, hdr)
}

// dirTimes sets directory times once their children exist.
func (a *applier) dirTimes() error {
	for i := len(a.dirs) - 1; i >= 0; i-- {
		if err := lutimes(a.dirs[i].path, a.dirs[i].hdr); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func lutimes(p string, hdr *tar.Header) error {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	ts := []unix.Timespec{timespec(atime), timespec(hdr.ModTime)}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func timespec(t time.Time) unix.Timespec { return unix.NsecToTimespec(t.UnixNano()) }

// Budget is an allowance of uncompressed bytes, which the layers one pull
// extracts at the same time may share. Safe for concurrent use.
type Budget struct{ left atomic.Int64 }

// NewBudget returns an allowance of n bytes.
func NewBudget(n int64) *Budget {
	b := &Budget{}
	b.left.Store(n)
	return b
}

// take reserves up to n bytes, 0 when none are left.
func (b *Budget) take(n int64) int64 {
	for {
		left := b.left.Load()
		if left <= 0 {
			return 0
		}
		m := min(n, left)
		if b.left.CompareAndSwap(left, left-m) {
			return m
		}
	}
}

// limitReader fails with ErrTooLarge past its budget, rather than ending
// the stream as io.LimitReader would.
type limitReader struct {
	r io.Reader
	b *Budget
}

func (l *limitReader) Read(p []byte) (int, error) {
	m := l.b.take(int64(len(p)))
	if m == 0 && len(p) > 0 {
		// One byte more than allowed tells a full stream from a bomb.
		var b [1]byte
		n, err := l.r.Read(b[:])
		if n > 0 {
			return 0, ErrTooLarge
		}
		return 0, err
	}
	n, err := l.r.Read(p[:m])
	l.b.left.Add(m - int64(n))
	return n, err
}
