package snapshotter

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/mount"
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

func TestFirstLower(t *testing.T) {
	for _, tc := range []struct {
		ms   []mount.Mount
		want string
	}{
		{[]mount.Mount{{Type: "bind", Source: "/s/snapshots/3/fs", Options: []string{"ro", "rbind"}}}, "/s/snapshots/3/fs"},
		{[]mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{"index=off", "lowerdir=/s/snapshots/5/fs:/s/snapshots/3/fs"}}}, "/s/snapshots/5/fs"},
	} {
		if got, err := firstLower(tc.ms); err != nil || got != tc.want {
			t.Errorf("%v: %q %v, want %q", tc.ms, got, err, tc.want)
		}
	}
	for _, ms := range [][]mount.Mount{nil, {{Type: "overlay", Options: []string{"upperdir=/u"}}}, {{Type: "bind", Source: "/a"}, {Type: "bind", Source: "/b"}}} {
		if got, err := firstLower(ms); err == nil {
			t.Errorf("%v: %q, want an error", ms, got)
		}
	}
}
