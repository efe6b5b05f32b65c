package bundle

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// overlayDir holds the container's own layer of a mounted bundle: what it
// writes (upper) and overlayfs's work directory.
const overlayDir = "overlay"

// MountRootfs mounts dir/rootfs as an overlay of the read-only layers
// (their directories, the lowest first) under a writable layer of the
// bundle's own, so that the layers can be shared by every container that
// uses them.
func MountRootfs(dir string, layers []string) error {
	upper, work := filepath.Join(dir, overlayDir, "upper"), filepath.Join(dir, overlayDir, "work")
	rootfs := filepath.Join(dir, RootfsDir)
	if strings.ContainsAny(dir, ":,") {
		return fmt.Errorf("bundle path %q: overlayfs cannot name a directory with ':' or ','", dir)
	}
	for _, d := range []string{upper, work, rootfs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if len(layers) == 0 {
		return nil // an image without layers: an empty root
	}
	lower := make([]string, len(layers))
	for i, l := range layers {
		lower[len(layers)-1-i] = l // overlayfs lists the top first
	}
	opts := func(lower []string) string {
		return "lowerdir=" + strings.Join(lower, ":") + ",upperdir=" + upper + ",workdir=" + work
	}
	if len(opts(lower)) < unix.Getpagesize()-1 {
		return mountOverlay(rootfs, opts(lower))
	}
	// Too long for mount(2)'s one page of options: name the layers by
	// descriptors held open across the call.
	for i, l := range lower {
		fd, err := unix.Open(l, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		lower[i] = "/proc/self/fd/" + strconv.Itoa(fd)
	}
	return mountOverlay(rootfs, opts(lower))
}

func mountOverlay(target, opts string) error {
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", target, err)
	}
	return nil
}

// Remove unmounts a bundle's rootfs, if mounted, and deletes the bundle;
// the shared layers stay.
func Remove(dir string) error {
	rootfs := filepath.Join(dir, RootfsDir)
	if err := unix.Unmount(rootfs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", rootfs, err)
	}
	return os.RemoveAll(dir)
}
