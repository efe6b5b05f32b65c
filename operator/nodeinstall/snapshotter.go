package nodeinstall

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/cocoon-cc/cocoon/snapshotter"
)

// ErrSnapshotter is a snapshotter installation the installer refused or
// could not make.
var ErrSnapshotter = errors.New("cocoon-snapshotter")

// startSnapshotter runs cocoon-snapshotter as a host service, started
// again when its binary changed, and waits for its socket.
func (o Options) startSnapshotter(ctx context.Context, restart bool) (string, error) {
	if o.Services == nil {
		return "", fmt.Errorf("%w: no way to run host services", ErrSnapshotter)
	}
	dataRoot, err := o.Containerd.DataRoot()
	if err != nil {
		return "", err
	}
	// An earlier uninstall's cleanup would remove the snapshots under it.
	if err := stopCleanup(ctx, dataRoot); err != nil {
		return "", err
	}
	argv := []string{filepath.Join(o.InstallDir, "bin", snapshotterBin),
		"--containerd-root=" + dataRoot,
		"--containerd-address=" + o.Containerd.Address,
		"--address=" + o.Snapshotter.Address,
		"--images=" + o.Snapshotter.Images,
	}
	how, err := o.Services.Ensure(ctx, snapshotterBin, argv, restart)
	if err != nil {
		return "", err
	}
	for deadline := time.Now().Add(time.Minute); ; {
		if fi, err := os.Stat(o.local(o.Snapshotter.Address)); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return how, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%w: no socket at %s (%s)", ErrSnapshotter, o.Snapshotter.Address, how)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pruneStaleSnapshots removes containerd's records of the snapshots an
// earlier uninstall removed (snapshotter.PruneStale).
func (o Options) pruneStaleSnapshots(ctx context.Context) error {
	ci, err := snapshotter.NewContainerdImages(o.local(o.Containerd.Address))
	if err != nil {
		return err
	}
	defer ci.Close()
	if _, err := ci.PruneStale(ctx); err != nil {
		return fmt.Errorf("%w: containerd's records of removed snapshots: %w", ErrSnapshotter, err)
	}
	return nil
}

// stopCleanup stops the cocoon-snapshotter --remove-unused an uninstall
// left for containerd's root, and waits until it is gone.
func stopCleanup(ctx context.Context, dataRoot string) error {
	for pid, args := range processes() {
		if filepath.Base(args[0]) != snapshotterBin || !slices.Equal(args, cleanupArgs(args[0], dataRoot)) {
			continue
		}
		syscall.Kill(pid, syscall.SIGTERM)
		for alive(pid) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// containerdMounts are the mounts of containerd's mount namespace, where
// it mounts containers' root filesystems: its process's, or the host
// init's when containerd does not run (mid-restart).
func (o Options) containerdMounts() ([]byte, error) {
	pid := 1
	if p, err := findContainerd(o.Containerd.ConfigPath); err == nil {
		pid = p
	}
	return os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
}

// removeSnapshotter stops cocoon-snapshotter, which containerd no longer
// uses, and removes its snapshots: at once when no container's root
// filesystem is made from them, else (the uninstall's own pod, pods that
// started while it served) through cocoon-snapshotter --remove-unused,
// left running on its own until the last of them is gone.
func (o Options) removeSnapshotter(ctx context.Context) error {
	if o.Services == nil {
		return fmt.Errorf("%w: no way to run host services", ErrSnapshotter)
	}
	if err := o.Services.Stop(ctx, snapshotterBin); err != nil {
		return err
	}
	dataRoot, err := o.Containerd.DataRoot()
	if err != nil {
		return err
	}
	root := snapshotter.ImageFSPath(dataRoot)
	if _, err := os.Lstat(o.local(root)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	mountinfo, err := o.containerdMounts()
	if err != nil {
		return err
	}
	if !snapshotter.InUse(mountinfo, root) {
		return os.RemoveAll(o.local(root))
	}
	bin := filepath.Join(o.InstallDir, "bin", snapshotterBin)
	if _, err := installFile(filepath.Join(o.SourceDir, snapshotterBin), o.local(bin), 0o755); err != nil {
		return fmt.Errorf("%w: %v", ErrSnapshotter, err)
	}
	return o.Services.Detach(ctx, snapshotterBin+"-cleanup", cleanupArgs(bin, dataRoot))
}

// cleanupArgs run the snapshotter bin to remove its snapshots once unused.
func cleanupArgs(bin, dataRoot string) []string {
	return []string{bin, "--remove-unused", "--containerd-root=" + dataRoot}
}
