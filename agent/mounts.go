package agent

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// PrivateDirs are the directories a local-backend agent gets private
// tmpfs copies of: its state, guest-components' sockets, keys and image
// work directories and the pod's volumes (Kata's paths), which in a VM live
// in the guest's own /run.
var PrivateDirs = []string{"/run/cocoon", "/run/confidential-containers", "/run/image-rs", "/run/kata-containers"}

// PrivateMounts prepares the mount namespace of an agent started in new
// namespaces on the host (the local backend): nothing it mounts propagates
// to the host, /proc shows its own PID namespace, and dirs are fresh
// tmpfs mounts.
func PrivateMounts(dirs ...string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
			return fmt.Errorf("mount %s: %w", d, err)
		}
	}
	return nil
}
