package snapshotter

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLinkImageFS(t *testing.T) {
	ctrd := filepath.Join(t.TempDir(), "containerd")

	// The default: the snapshots live at CRI's path itself.
	if err := LinkImageFS(ctrd, ImageFSPath(ctrd)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(ImageFSPath(ctrd)); err != nil || !fi.IsDir() {
		t.Fatalf("CRI's path: %v, %v", fi, err)
	}

	// Elsewhere: CRI's path links there, once and again.
	ctrd2 := filepath.Join(t.TempDir(), "containerd")
	root := t.TempDir()
	for range 2 {
		if err := LinkImageFS(ctrd2, root); err != nil {
			t.Fatal(err)
		}
	}
	if target, err := os.Readlink(ImageFSPath(ctrd2)); err != nil || target != root {
		t.Fatalf("link to %q, %v; want %q", target, err, root)
	}

	// A directory made by hand (the old workaround) is left alone.
	ctrd3 := t.TempDir()
	if err := os.Mkdir(ImageFSPath(ctrd3), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := LinkImageFS(ctrd3, root); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(ImageFSPath(ctrd3)); err != nil || !fi.IsDir() {
		t.Fatalf("hand-made directory replaced: %v, %v", fi, err)
	}
}
