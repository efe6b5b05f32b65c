package agent

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// SharedPath is where Kata's runtime names the files it copies into the
// guest (volumes, /etc/hosts, ...); the agent keeps them in its SharedDir.
const SharedPath = "/run/kata-containers/shared/containers"

// CopyFile writes one chunk of a file the host copies into the guest, or
// makes a directory or a symlink, as Kata's agent does: a file is written to
// "<name>.tmp" and renamed over its name once it has file_size bytes, so a
// container never sees half a file. With Cocoon's remove it deletes the
// path instead (a file gone from the host's volume). Everything stays under
// SharedDir.
func (a *Agent) CopyFile(ctx context.Context, r *pb.CopyFileRequest) (*emptypb.Empty, error) {
	return empty(), toStatus(a.copyFile(r))
}

func (a *Agent) copyFile(r *pb.CopyFileRequest) error {
	name, err := sharedName(r.Path)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.cfg.SharedDir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(a.cfg.SharedDir)
	if err != nil {
		return err
	}
	defer root.Close()
	if r.Remove {
		return root.RemoveAll(name)
	}
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, fs.FileMode(r.DirMode&0o777)); err != nil {
			return fmt.Errorf("copy %s: parent: %w", r.Path, err)
		}
		if err := root.Chown(dir, int(r.Uid), int(r.Gid)); err != nil {
			return fmt.Errorf("copy %s: parent owner: %w", r.Path, err)
		}
	}
	switch r.FileMode & unix.S_IFMT {
	case unix.S_IFDIR:
		return copyDir(root, name, r)
	case unix.S_IFLNK:
		return copySymlink(root, name, r)
	case 0, unix.S_IFREG:
		return copyChunk(root, name, r)
	}
	return fmt.Errorf("%w: copy %s: file type %#o", ErrInvalidArgument, r.Path, r.FileMode&unix.S_IFMT)
}

// sharedName is the request's path relative to SharedPath: clean, local,
// never the shared directory itself.
func sharedName(p string) (string, error) {
	rel, ok := strings.CutPrefix(p, SharedPath+"/")
	if !ok || rel == "" || !fs.ValidPath(rel) || strings.HasSuffix(rel, ".tmp") {
		return "", fmt.Errorf("%w: copy %q: not a file under %s", ErrInvalidArgument, p, SharedPath)
	}
	return rel, nil
}

func copyDir(root *os.Root, name string, r *pb.CopyFileRequest) error {
	// An existing directory stays (its files may be in use); anything else goes.
	if st, err := root.Lstat(name); err == nil && !st.IsDir() {
		if err := root.Remove(name); err != nil {
			return err
		}
	}
	if err := root.MkdirAll(name, fs.FileMode(r.FileMode&0o777)); err != nil {
		return fmt.Errorf("copy %s: %w", r.Path, err)
	}
	if err := root.Chmod(name, permBits(r.FileMode)); err != nil {
		return err
	}
	return root.Chown(name, int(r.Uid), int(r.Gid))
}

// copySymlink makes the symlink under a temporary name and renames it over
// name: the kubelet updates a ConfigMap volume by swapping its "..data"
// symlink, and a container must never find it missing.
func copySymlink(root *os.Root, name string, r *pb.CopyFileRequest) error {
	tmp := name + ".tmp"
	if err := root.RemoveAll(tmp); err != nil {
		return err
	}
	if err := root.Symlink(string(r.Data), tmp); err != nil {
		return fmt.Errorf("copy %s: %w", r.Path, err)
	}
	if err := root.Lchown(tmp, int(r.Uid), int(r.Gid)); err != nil {
		return err
	}
	if st, err := root.Lstat(name); err == nil && st.IsDir() {
		if err := root.RemoveAll(name); err != nil {
			return err
		}
	}
	return root.Rename(tmp, name)
}

func copyChunk(root *os.Root, name string, r *pb.CopyFileRequest) error {
	if r.Offset < 0 || r.Offset+int64(len(r.Data)) > r.FileSize {
		return fmt.Errorf("%w: copy %s: %d bytes at %d do not fit a file of %d", ErrInvalidArgument, r.Path, len(r.Data), r.Offset, r.FileSize)
	}
	tmp := name + ".tmp"
	flags := os.O_RDWR | os.O_CREATE
	if r.Offset == 0 {
		if err := root.RemoveAll(tmp); err != nil {
			return err
		}
		flags |= os.O_TRUNC | os.O_EXCL
	}
	f, err := root.OpenFile(tmp, flags, permBits(r.FileMode)&0o777)
	if err != nil {
		return fmt.Errorf("copy %s: %w", r.Path, err)
	}
	defer f.Close()
	if _, err := f.WriteAt(r.Data, r.Offset); err != nil {
		return fmt.Errorf("copy %s: %w", r.Path, err)
	}
	st, err := f.Stat()
	if err != nil || st.Size() != r.FileSize {
		return err // more chunks to come
	}
	if err := f.Chmod(permBits(r.FileMode)); err != nil {
		return err
	}
	if err := f.Chown(int(r.Uid), int(r.Gid)); err != nil {
		return err
	}
	if st, err := root.Lstat(name); err == nil && st.IsDir() {
		if err := root.RemoveAll(name); err != nil {
			return err
		}
	}
	return root.Rename(tmp, name) // atomic over a file or symlink
}

// permBits keeps a mode's permission, setuid, setgid and sticky bits.
func permBits(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	for bit, fm := range map[uint32]fs.FileMode{unix.S_ISUID: fs.ModeSetuid, unix.S_ISGID: fs.ModeSetgid, unix.S_ISVTX: fs.ModeSticky} {
		if m&bit != 0 {
			mode |= fm
		}
	}
	return mode
}
