package unpack

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Finish completes the layer once the layers below it are in place; lowers
// are their directories, the nearest first. It makes the hard links to
// lower layers' files, which then share their inode as in a flat unpack,
// and gives the directories the layer created implicitly the attributes of
// the lower directory they merge with (an overlay mount shows the upper
// one's).
func (l *Layer) Finish(lowers []string) error {
	for _, h := range l.links {
		if err := l.linkLower(lowers, h); err != nil {
			return fmt.Errorf("%s: %w", h.path, err)
		}
	}
	// Parents after children: setting a directory's times is the last
	// change to it.
	dirs := make([]string, 0, len(l.implicit))
	for d := range l.implicit {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	slices.Reverse(dirs)
	for _, d := range dirs {
		dst, ok := l.real(d)
		if !ok || !isDir(dst) {
			continue // a later entry of the layer replaced it
		}
		if src, ok := lookupLower(lowers, d); ok {
			if err := copyDirAttrs(src, dst); err != nil {
				return fmt.Errorf("%s: %w", d, err)
			}
		}
	}
	return nil
}

// real returns the path of rel in the layer if no directory on the way
// is a symlink: a later entry may have replaced a directory this layer
// made with a symlink, which Finish must not follow out of the layer.
func (l *Layer) real(rel string) (string, bool) {
	p := l.Dir
	comps := strings.Split(rel, "/")
	for _, c := range comps[:len(comps)-1] {
		p = filepath.Join(p, c)
		if !isDir(p) {
			return "", false
		}
	}
	return filepath.Join(p, comps[len(comps)-1]), true
}

// isDir tells whether p is a directory (not a symlink to one).
func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

func (l *Layer) linkLower(lowers []string, h hardlink) error {
	dst, ok := l.real(h.path)
	if !ok {
		return nil // a later entry of the layer replaced its directory
	}
	if _, err := os.Lstat(dst); err == nil {
		return nil // a later entry of the layer replaced the link
	}
	src, ok := lookupLower(lowers, h.target)
	if !ok {
		return fmt.Errorf("%w: hard link target %s not found", ErrBadEntry, h.target)
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%w: hard link to a directory", ErrBadEntry)
	}
	parent := filepath.Dir(dst)
	var st unix.Stat_t
	if err := unix.Lstat(parent, &st); err != nil {
		return err
	}
	if err := os.Link(src, dst); err != nil {
		return err
	}
	// The link is not a change of the directory's own.
	return setTimes(parent, &st)
}

// lookupLower finds rel as the merged view of lowers (nearest first) shows
// it: a whiteout, a non-directory or an opaque directory on the way hides
// what is below. Symlinks are not followed: the path names a real file.
func lookupLower(lowers []string, rel string) (string, bool) {
	comps := strings.Split(rel, "/")
	for _, dir := range lowers {
		opaque := false
		for i := range comps {
			p := filepath.Join(dir, path.Join(comps[:i+1]...))
			fi, err := os.Lstat(p)
			if errors.Is(err, fs.ErrNotExist) {
				break // not in this layer; maybe below
			}
			if err != nil || isWhiteout(p) {
				return "", false
			}
			if i == len(comps)-1 {
				return p, true
			}
			if !fi.IsDir() {
				return "", false
			}
			if v, err := getxattr(p, opaqueXattr); err == nil && v == "y" {
				opaque = true
			}
		}
		if opaque {
			return "", false
		}
	}
	return "", false
}

// copyDirAttrs gives dst src's owner, mode, xattrs and times.
func copyDirAttrs(src, dst string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return err
	}
	if os.Geteuid() == 0 {
		if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, dst, st.Mode&0o7777, 0); err != nil {
		return err
	}
	names, err := listxattr(src)
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasPrefix(n, overlayXattrs) {
			continue
		}
		v, err := getxattr(src, n)
		if err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, n, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return err
		}
	}
	return setTimes(dst, &st)
}

func setTimes(p string, st *unix.Stat_t) error {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func getxattr(p, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}

func listxattr(p string) ([]string, error) {
	n, err := unix.Llistxattr(p, nil)
	if err != nil || n == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, n)
	if n, err = unix.Llistxattr(p, buf); err != nil {
		return nil, err
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names, nil
}
