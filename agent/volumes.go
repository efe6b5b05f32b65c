package agent

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// A confidential guest shares no filesystem with the host. A container's
// bind mounts name guest paths, as Kata's runtime sends them:
//   - SharedPath/<name>: files the host copied in with CopyFile (ConfigMap,
//     Secret, downwardAPI and projected volumes, /etc/hosts, ...);
//   - EphemeralPath/<name> and LocalPath/<name>: the pod's emptyDir volumes,
//     the "ephemeral" (tmpfs, medium: Memory) and "local" (a directory)
//     storages of the request;
//   - any other source is a host path (hostPath volume): the policy refuses
//     it unless it names it; then the container gets a guest directory of
//     its own in HostPathDir, empty at first and shared by the pod's
//     containers, never the host's files.
const (
	SandboxPath   = "/run/kata-containers/sandbox"
	EphemeralPath = SandboxPath + "/ephemeral"
	LocalPath     = SandboxPath + "/storage"
	HostPathDir   = SandboxPath + "/hostpath"
)

// The storage drivers of emptyDir volumes, Kata's names.
const (
	StorageDriverEphemeral = "ephemeral"
	StorageDriverLocal     = "local"
)

// isVolumeStorage tells the emptyDir storages from the image's.
func isVolumeStorage(s *pb.Storage) bool {
	d := s.GetDriver()
	return d == StorageDriverEphemeral || d == StorageDriverLocal || d == StorageDriverBlock
}

// isBind tells a bind mount, whatever its type says.
func isBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// sandboxName is p's path under SandboxPath: clean and local.
func sandboxName(p, dir string) (string, bool) {
	rel, ok := strings.CutPrefix(p, dir+"/")
	if !ok || !fs.ValidPath(rel) {
		return "", false
	}
	return rel, true
}

// setupStorages mounts the request's emptyDir storages, once per pod: a
// second container naming one shares it.
func (a *Agent) setupStorages(ctx context.Context, storages []*pb.Storage) error {
	for _, s := range storages {
		if !isVolumeStorage(s) {
			continue
		}
		if err := a.setupStorage(ctx, s); err != nil {
			return fmt.Errorf("storage %s: %w", s.MountPoint, err)
		}
	}
	return nil
}

func (a *Agent) setupStorage(ctx context.Context, s *pb.Storage) error {
	dir := EphemeralPath
	if s.Driver != StorageDriverEphemeral {
		dir = LocalPath
	}
	name, ok := sandboxName(s.MountPoint, dir)
	if !ok || strings.Contains(name, "/") {
		return fmt.Errorf("%w: a %s storage's mount point is %s/<name>", ErrInvalidArgument, s.Driver, dir)
	}
	target := filepath.Join(a.cfg.SandboxDir, strings.TrimPrefix(dir, SandboxPath), name)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.storages[s.MountPoint] != "" {
		if a.storages[s.MountPoint] != s.Driver {
			return fmt.Errorf("%w: already a %s storage", ErrInvalidArgument, a.storages[s.MountPoint])
		}
		return nil
	}
	mode, data, err := fs.FileMode(0o777), "", error(nil)
	if s.Driver == StorageDriverBlock {
		if err := a.setupBlock(ctx, s, target); err != nil {
			return err
		}
	} else if mode, data, err = storageOptions(s); err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if s.Driver == StorageDriverEphemeral {
		if err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
			return fmt.Errorf("mount tmpfs (%s): %w", data, err)
		}
	}
	if err := os.Chmod(target, mode); err != nil {
		return err
	}
	if s.FsGroup != nil {
		// Kubernetes' fsGroup: the group owns the volume and what is made in it.
		if err := os.Chown(target, -1, int(s.FsGroup.GroupId)); err != nil {
			return err
		}
		if err := os.Chmod(target, mode|fs.ModeSetgid); err != nil {
			return err
		}
	}
	a.storages[s.MountPoint] = s.Driver
	a.log.Info("storage set up", "driver", s.Driver, "mount_point", s.MountPoint, "options", data)
	return nil
}

// storageOptions checks an emptyDir storage's options: its directory's
// mode (an emptyDir is 0777, as the kubelet makes it) and, for tmpfs, its
// size and inode limits; nothing else.
func storageOptions(s *pb.Storage) (fs.FileMode, string, error) {
	if s.Driver == StorageDriverEphemeral && (s.Source != "tmpfs" || s.Fstype != "tmpfs") {
		return 0, "", fmt.Errorf("%w: an ephemeral storage is a tmpfs", ErrInvalidArgument)
	}
	mode := fs.FileMode(0o777)
	var data []string
	for _, o := range s.Options {
		k, v, _ := strings.Cut(o, "=")
		switch {
		case k == "mode":
			m, err := strconv.ParseUint(v, 8, 32)
			if err != nil || m > 0o777 {
				return 0, "", fmt.Errorf("%w: option %q", ErrInvalidArgument, o)
			}
			mode = fs.FileMode(m)
		case (k == "size" || k == "nr_inodes") && s.Driver == StorageDriverEphemeral && validSize(v):
			data = append(data, o)
		default:
			return 0, "", fmt.Errorf("%w: option %q of a %s storage", ErrInvalidArgument, o, s.Driver)
		}
	}
	return mode, strings.Join(data, ","), nil
}

// validSize is a tmpfs size: digits with an optional k, m, g or % suffix.
func validSize(v string) bool {
	v = strings.TrimRight(v, "kKmMgG%")
	_, err := strconv.ParseUint(v, 10, 64)
	return err == nil
}

// teardownStorages unmounts the pod's tmpfs and disk storages
// (DestroySandbox); the disks' mappings go with the VM.
func (a *Agent) teardownStorages() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for mp, driver := range a.storages {
		if driver != StorageDriverLocal { // a tmpfs or a disk
			if err := unix.Unmount(filepath.Join(a.cfg.SandboxDir, strings.TrimPrefix(mp, SandboxPath)), unix.MNT_DETACH); err != nil {
				a.log.Warn("unmount storage", "mount_point", mp, "err", err)
			}
		}
	}
	a.storages = map[string]string{}
}

// bindSource maps a bind mount's source to the guest directory standing
// for it (the comment above), checking that it exists and stays there.
func (a *Agent) bindSource(m specs.Mount) (string, error) {
	src := path.Clean(m.Source)
	if !path.IsAbs(src) {
		return "", fmt.Errorf("%w: mount %s: source %q is not an absolute path", ErrInvalidArgument, m.Destination, m.Source)
	}
	if rel, ok := sandboxName(src, SharedPath); ok {
		return confined(a.cfg.SharedDir, rel, m.Destination)
	}
	for _, dir := range []string{EphemeralPath, LocalPath} {
		if rel, ok := sandboxName(src, dir); ok {
			a.mu.Lock()
			_, known := a.storages[dir+"/"+strings.SplitN(rel, "/", 2)[0]]
			a.mu.Unlock()
			if !known {
				return "", fmt.Errorf("%w: mount %s: %s is no storage of the pod", ErrInvalidArgument, m.Destination, src)
			}
			return confined(filepath.Join(a.cfg.SandboxDir, strings.TrimPrefix(dir, SandboxPath)), rel, m.Destination)
		}
	}
	if strings.HasPrefix(src+"/", "/run/kata-containers/") {
		return "", fmt.Errorf("%w: mount %s: %s is no shared file or storage", ErrInvalidArgument, m.Destination, src)
	}
	// A host path the policy let through: a guest directory of that name.
	dir := filepath.Join(a.cfg.SandboxDir, "hostpath", src)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("%w: mount %s: %v", ErrInvalidArgument, m.Destination, err)
	}
	a.log.Warn("host path mount allowed by the policy: the container gets an empty guest directory, not the host's files",
		"destination", m.Destination, "host_path", src)
	return dir, nil
}

// confined is root/rel when it exists and no part of rel is a symlink: the
// host writes root's contents (CopyFile) and must not point a mount
// elsewhere in the guest.
func confined(root, rel, dest string) (string, error) {
	p := root
	for _, part := range strings.Split(rel, "/") {
		p = filepath.Join(p, part)
		st, err := os.Lstat(p)
		if err != nil {
			return "", fmt.Errorf("%w: mount %s: %v", ErrInvalidArgument, dest, err)
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			return "", fmt.Errorf("%w: mount %s: %s is a symlink", ErrInvalidArgument, dest, rel)
		}
	}
	return p, nil
}

// copiedName is what follows "<container id>-" in the name of a copy.
var copiedName = regexp.MustCompile(`^[0-9a-f]{16}-`)

// removeShared deletes the files copied in for a container
// (SharedPath/<id>-*, Kata's names) once it is removed.
func (a *Agent) removeShared(id string) {
	entries, _ := os.ReadDir(a.cfg.SharedDir)
	for _, e := range entries {
		if rest, ok := strings.CutPrefix(e.Name(), id+"-"); ok && copiedName.MatchString(rest) {
			os.RemoveAll(filepath.Join(a.cfg.SharedDir, e.Name()))
		}
	}
}
