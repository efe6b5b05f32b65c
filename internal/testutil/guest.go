package testutil

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	guestOnce sync.Once
	guestDir  string
	guestErr  error
)

// Guest returns make guest's kernel and initramfs: build/guest when it is
// there (make test builds it first), else built once per test process into
// a temporary directory. It skips the test loudly without QEMU.
func Guest(t testing.TB) (kernel, initrd string) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("SKIP: qemu-system-x86 not installed (scripts/install-deps.sh installs it)")
	}
	root := RepoRoot(t)
	guestOnce.Do(func() {
		guestDir = filepath.Join(root, "build", "guest")
		if _, err := os.Stat(filepath.Join(guestDir, "SHA256SUMS")); err == nil {
			return
		}
		guestDir, guestErr = os.MkdirTemp("", "cocoon-guest-")
		if guestErr != nil {
			return
		}
		cmd := exec.Command("bash", "scripts/build-guest.sh")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "OUT="+guestDir)
		if out, err := cmd.CombinedOutput(); err != nil {
			guestErr = errors.New(string(out))
		}
	})
	if guestErr != nil {
		t.Fatalf("make guest: %v", guestErr)
	}
	return filepath.Join(guestDir, "vmlinuz"), filepath.Join(guestDir, "initramfs.cpio.gz")
}
