package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cocoon-cc/cocoon/agent"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// A confidential guest shares no filesystem with the host, so a
// container's host bind mounts become, as with Kata's runtime without a
// shared filesystem:
//   - copies, for the kubelet's ConfigMap, Secret, downwardAPI and projected
//     volumes (and subPaths of them), /etc/hosts, /etc/hostname,
//     /etc/resolv.conf and the termination-message file: the files are copied
//     in with CopyFile to agent.SharedPath/<container id>-<hash>-<name> and
//     copied again when they change on the host (the kubelet swaps a
//     volume's "..data" symlink to update it);
//   - storages the guest makes, for emptyDir volumes and the pod's /dev/shm:
//     a tmpfs (the host's is a tmpfs: medium Memory, with its size), an
//     encrypted scratch disk (disks.go) or a guest directory, shared by the
//     pod's containers;
//   - anything else (hostPath volumes) is sent as it is, for the agent policy
//     to refuse (or allow, as an empty guest directory).

// volumeCheckInterval is how often the host files of copied volumes are
// checked for changes, as Kata's runtime polls them.
const volumeCheckInterval = 2 * time.Second

// copyChunkSize is the most file data one CopyFile request carries.
const copyChunkSize = 1 << 20

var (
	// kubeletVolume is a volume directory the kubelet writes and updates.
	kubeletVolume = regexp.MustCompile(`/volumes/kubernetes\.io~(configmap|secret|projected|downward-api)/[^/]+$`)
	// subPath is the kubelet's bind mount of a part of a volume.
	subPath = regexp.MustCompile(`^(.+/pods/[^/]+)/volume-subpaths/([^/]+)/`)
	// terminationLog is the kubelet's file behind a container's
	// terminationMessagePath.
	terminationLog = regexp.MustCompile(`/pods/[^/]+/containers/[^/]+/[^/]+$`)
	// emptyDir is an emptyDir volume's host directory.
	emptyDir = regexp.MustCompile(`/volumes/kubernetes\.io~empty-dir/([^/]+)$`)
)

// podFiles are the pod's files CRI bind mounts into every container.
var podFiles = []string{"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}

// copied is one host file or directory copied into the guest.
type copied struct {
	host, guest string
	dest        string               // the mount's path in the container
	seen        map[string]fileState // what was copied, by path relative to host
}

// fileState tells whether a host file changed since it was copied.
type fileState struct {
	mode     fs.FileMode
	size     int64
	mtime    time.Time
	uid, gid uint32
	target   string // a symlink's
}

// volumes are the copies of the pod's containers and their watchers.
type volumes struct {
	mu       sync.Mutex
	watchers map[string]context.CancelFunc // by container id
}

// guestMounts rewrites container id's host bind mounts for the guest
// (the comment above), copies the files in, and returns the emptyDir
// storages the request must carry and the copies to watch.
func guestMounts(ctx context.Context, a pb.AgentServiceService, disks *podDisks, id string, spec *specs.Spec) ([]*pb.Storage, []*copied, error) {
	var storages []*pb.Storage
	var copies []*copied
	for i, m := range spec.Mounts {
		if !isBind(m) {
			continue
		}
		src := filepath.Clean(m.Source)
		switch {
		case m.Destination == "/dev/shm":
			storages = append(storages, memoryStorage("shm", src))
			spec.Mounts[i].Source = agent.EphemeralPath + "/shm"
		case emptyDir.MatchString(src):
			s := emptyDirStorage(src)
			if s.Driver == agent.StorageDriverLocal && disks != nil && disks.emptyDirs {
				var err error
				if s, err = disks.scratch(ctx, emptyDir.FindStringSubmatch(src)[1], s.FsGroup); err != nil {
					return nil, nil, err
				}
			}
			storages = append(storages, s)
			spec.Mounts[i].Source = s.MountPoint
		case copiedMount(m.Destination, src):
			c := &copied{host: src, guest: copyName(id, src), dest: m.Destination, seen: map[string]fileState{}}
			if err := c.sync(ctx, a); err != nil {
				return nil, nil, fmt.Errorf("copy %s into the guest (mount %s): %w", src, m.Destination, err)
			}
			copies = append(copies, c)
			spec.Mounts[i].Source = c.guest
		}
	}
	return storages, copies, nil
}

func isBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// copiedMount tells the host files copied into the guest.
func copiedMount(dest, src string) bool {
	if slices.Contains(podFiles, dest) || kubeletVolume.MatchString(src) || terminationLog.MatchString(src) {
		return true
	}
	// A subPath of a volume that is copied (never of a hostPath volume).
	sp := subPath.FindStringSubmatch(src)
	if sp == nil {
		return false
	}
	found, _ := filepath.Glob(filepath.Join(sp[1], "volumes", "kubernetes.io~*", sp[2]))
	return slices.ContainsFunc(found, kubeletVolume.MatchString)
}

// copyName is Kata's name of a copy: the container's id, a hash of the
// host path (stable, so that updates land on the same copy) and its name.
func copyName(id, src string) string {
	sum := sha256.Sum256([]byte(src))
	return agent.SharedPath + "/" + id + "-" + hex.EncodeToString(sum[:8]) + "-" + filepath.Base(src)
}

// emptyDirStorage is an emptyDir volume's storage: a tmpfs when the
// kubelet made a tmpfs of it (medium: Memory), else a guest directory.
// The kubelet gives a pod's fsGroup an emptyDir's directory, setgid: so
// does the guest.
func emptyDirStorage(src string) *pb.Storage {
	name := emptyDir.FindStringSubmatch(src)[1]
	s := &pb.Storage{Driver: agent.StorageDriverLocal, Source: "local", Fstype: "local",
		MountPoint: agent.LocalPath + "/" + name, Options: []string{"mode=0777"}}
	if _, ok := tmpfsSize(src); ok {
		s = memoryStorage(name, src)
	}
	if fi, err := os.Stat(src); err == nil && fi.Mode()&fs.ModeSetgid != 0 {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			s.FsGroup = &pb.FSGroup{GroupId: st.Gid}
		}
	}
	return s
}

// memoryStorage is a guest tmpfs as large as the host's tmpfs at src.
func memoryStorage(name, src string) *pb.Storage {
	s := &pb.Storage{Driver: agent.StorageDriverEphemeral, Source: "tmpfs", Fstype: "tmpfs",
		MountPoint: agent.EphemeralPath + "/" + name}
	if size, ok := tmpfsSize(src); ok && size != "" {
		s.Options = []string{"size=" + size}
	}
	return s
}

// tmpfsSize reports whether a tmpfs is mounted at dir, and its size option.
func tmpfsSize(dir string) (string, bool) {
	mounts, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil || len(mounts) == 0 || mounts[len(mounts)-1].FSType != "tmpfs" {
		return "", false
	}
	for _, o := range strings.Split(mounts[len(mounts)-1].VFSOptions, ",") {
		if v, ok := strings.CutPrefix(o, "size="); ok {
			return v, true
		}
	}
	return "", true
}

// sync copies what changed on the host since the last sync: directories
// first, then files, then symlinks, so that a ConfigMap's new "..data"
// points at complete files when it lands, and last removes from the guest
// what the host removed (Cocoon's CopyFile extension), as the kubelet's
// atomic writer removes a volume's old keys and its old "..<timestamp>"
// directory only after the swap.
func (c *copied) sync(ctx context.Context, a pb.AgentServiceService) error {
	var dirs, files, links []string
	now := map[string]fileState{}
	err := filepath.WalkDir(c.host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := stateOf(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(c.host, p)
		now[rel] = st
		if old, ok := c.seen[rel]; ok && old == st {
			return nil
		}
		switch {
		case st.mode.IsDir():
			dirs = append(dirs, rel)
		case st.mode.IsRegular():
			files = append(files, rel)
		case st.mode&fs.ModeSymlink != 0:
			links = append(links, rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, rel := range slices.Concat(dirs, files, links) {
		if err := c.copy(ctx, a, rel, now[rel]); err != nil {
			return err
		}
		c.seen[rel] = now[rel]
	}
	for _, rel := range gone(c.seen, now) {
		if _, err := a.CopyFile(ctx, &pb.CopyFileRequest{Path: c.guestPath(rel), Remove: true}); err != nil {
			return err
		}
		for old := range c.seen {
			if old == rel || strings.HasPrefix(old, rel+"/") {
				delete(c.seen, old)
			}
		}
	}
	return nil
}

// gone lists what was copied and is no longer on the host: the topmost
// entries only (removing a directory removes what it holds), sorted.
func gone(seen, now map[string]fileState) []string {
	var top []string
	for rel := range seen {
		if _, ok := now[rel]; !ok && !goneParent(rel, now) {
			top = append(top, rel)
		}
	}
	slices.Sort(top)
	return top
}

// goneParent tells whether a directory above rel is gone from the host too.
func goneParent(rel string, now map[string]fileState) bool {
	for dir := filepath.Dir(rel); dir != "." && dir != "/"; dir = filepath.Dir(dir) {
		if _, ok := now[dir]; !ok {
			return true
		}
	}
	return false
}

func stateOf(p string) (fileState, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return fileState{}, err
	}
	st := fileState{mode: fi.Mode(), size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.uid, st.gid = sys.Uid, sys.Gid
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		st.target, err = os.Readlink(p)
	}
	return st, err
}

// guestPath is the guest's name of host entry rel.
func (c *copied) guestPath(rel string) string {
	if rel == "." {
		return c.guest
	}
	return path.Join(c.guest, filepath.ToSlash(rel))
}

// copy sends one host entry, a regular file in chunks.
func (c *copied) copy(ctx context.Context, a pb.AgentServiceService, rel string, st fileState) error {
	req := &pb.CopyFileRequest{Path: c.guestPath(rel), FileMode: unixMode(st.mode), DirMode: 0o755, Uid: int32(st.uid), Gid: int32(st.gid)}
	switch {
	case st.mode.IsDir():
		_, err := a.CopyFile(ctx, req)
		return err
	case st.mode&fs.ModeSymlink != 0:
		req.Data = []byte(st.target)
		_, err := a.CopyFile(ctx, req)
		return err
	}
	f, err := os.Open(filepath.Join(c.host, rel))
	if err != nil {
		return err
	}
	defer f.Close()
	req.FileSize = st.size
	buf := make([]byte, min(st.size, copyChunkSize))
	for off := int64(0); ; {
		n, err := io.ReadFull(f, buf[:min(int64(len(buf)), st.size-off)])
		if err != nil {
			return fmt.Errorf("%s changed while copied: %w", rel, err)
		}
		req.Offset, req.Data = off, buf[:n]
		if _, err := a.CopyFile(ctx, req); err != nil {
			return err
		}
		if off += int64(n); off >= st.size {
			return nil
		}
	}
}

// unixMode is a Go file mode in stat(2)'s form, as CopyFile wants it.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	switch {
	case m.IsDir():
		u |= syscall.S_IFDIR
	case m&fs.ModeSymlink != 0:
		u |= syscall.S_IFLNK
	default:
		u |= syscall.S_IFREG
	}
	if m&fs.ModeSetuid != 0 {
		u |= syscall.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		u |= syscall.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		u |= syscall.S_ISVTX
	}
	return u
}

// watch copies container id's volumes again whenever they change on the
// host, until forget(id).
func (v *volumes) watch(ctx context.Context, a pb.AgentServiceService, id string, copies []*copied) {
	if len(copies) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	v.mu.Lock()
	if v.watchers == nil {
		v.watchers = map[string]context.CancelFunc{}
	}
	v.watchers[id] = cancel
	v.mu.Unlock()
	go func() {
		t := time.NewTicker(volumeCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, c := range copies {
				if err := c.sync(ctx, a); err != nil && ctx.Err() == nil {
					log.G(ctx).WithError(err).WithField("container", id).WithField("volume", c.host).Warn("update a volume in the guest")
				}
			}
		}
	}()
}

// forget stops watching container id's volumes.
func (v *volumes) forget(id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if cancel := v.watchers[id]; cancel != nil {
		cancel()
		delete(v.watchers, id)
	}
}
