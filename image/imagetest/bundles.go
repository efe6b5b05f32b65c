package imagetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/image/bundle"
)

// BundleDir returns a temporary directory for pulled bundles: their
// rootfs are overlay mounts, which the test's end unmounts before the
// directory is removed. It skips the test loudly when not root (mounts).
func BundleDir(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { UnmountBundles(dir) })
	return dir
}

// UnmountBundles removes the bundles directly under dir.
func UnmountBundles(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			bundle.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// RequireRoot skips a test that mounts, makes whiteouts or sets trusted
// xattrs when it does not run as root (CI does).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: needs root for overlay mounts and whiteouts (CI runs as root)")
	}
}
