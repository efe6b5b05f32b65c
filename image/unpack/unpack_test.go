package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cocoon-cc/cocoon/image/bundle"
	it "github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

func owned(e it.Entry, uid, gid int) it.Entry { e.Uid, e.Gid = uid, gid; return e }

func withXattr(e it.Entry, k, v string) it.Entry {
	e.PAXRecords = map[string]string{xattrPrefix + k: v}
	return e
}

// corpus is a two-layer image exercising whiteouts, opaque directories,
// hard links across layers, symlinks, replacements, modes and xattrs.
func corpus(t *testing.T) [][]byte {
	l1 := it.Tar(t,
		it.Dir("etc", 0o755),
		it.File("etc/passwd", "root:x:0:0\n", 0o644),
		owned(it.File("etc/shadow", "root:*:\n", 0o640), 0, 42),
		it.Dir("usr", 0o755), it.Dir("usr/bin", 0o755),
		it.File("usr/bin/tool", "#!/bin/sh\n", 0o755),
		it.Link("usr/bin/tool2", "usr/bin/tool"),
		it.Symlink("bin", "usr/bin"),
		it.Symlink("localtime", "/usr/share/zoneinfo/UTC"),
		it.Dir("usr/share", 0o755), it.File("usr/share/doc", "doc", 0o644),
		it.Dir("opt", 0o755), it.Dir("opt/data", 0o750),
		it.File("opt/data/a", "a", 0o644), it.Dir("opt/data/sub", 0o755), it.File("opt/data/sub/c", "c", 0o600),
		it.File("old", "old", 0o644),
		it.File("old2", "file then dir", 0o644),
		it.File("setuid", "suid", 0o4755),
		withXattr(it.File("xattr", "x", 0o644), "user.cocoon", "hello"),
		it.File("implicit/parent/file", "no parent entries", 0o644),
	)
	l2 := it.Tar(t,
		it.File(".wh.old", "", 0),
		it.File("opt/data/.wh..wh..opq", "", 0),
		it.File("opt/data/new", "new", 0o644),
		it.File("etc/passwd", "root:x:0:0:replaced\n", 0o644),
		it.Link("etc/passwd-", "etc/passwd"),
		it.Link("usr/bin/tool3", "usr/bin/tool"),
		it.File("usr/.wh.share", "", 0),
		it.Dir("old2", 0o711), it.File("old2/inside", "dir now", 0o644),
		it.File("localtime", "not a link any more", 0o644),
	)
	return [][]byte{l1, l2}
}

// applyAll extracts the layers into directories of their own, at the
// same time, finishes them in order and mounts them as a bundle's rootfs,
// which it returns.
func applyAll(t *testing.T, layers [][]byte, o Options) (string, error) {
	t.Helper()
	it.RequireRoot(t)
	dir := t.TempDir()
	ls, errs := make([]*Layer, len(layers)), make([]error, len(layers))
	var wg sync.WaitGroup
	for i, l := range layers {
		d := filepath.Join(dir, "layers", fmt.Sprint(i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { ls[i], errs[i] = Apply(context.Background(), d, bytes.NewReader(l), o) })
	}
	wg.Wait()
	var dirs []string
	for i, l := range ls {
		if errs[i] != nil {
			return "", errs[i]
		}
		lowers := slices.Clone(dirs)
		slices.Reverse(lowers)
		if err := l.Finish(lowers); err != nil {
			return "", err
		}
		dirs = append(dirs, l.Dir)
	}
	b := filepath.Join(dir, "bundle")
	t.Cleanup(func() { bundle.Remove(b) })
	if err := bundle.MountRootfs(b, dirs); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(b, bundle.RootfsDir), nil
}

// TestCorpusMatchesUmoci unpacks the corpus and compares the tree with
// what umoci unpack makes of the same OCI layout.
func TestCorpusMatchesUmoci(t *testing.T) {
	if _, err := exec.LookPath("umoci"); err != nil {
		t.Skip("umoci not installed (scripts/install-deps.sh)")
	}
	layers := corpus(t)
	ours, err := applyAll(t, layers, Options{})
	if err != nil {
		t.Fatal(err)
	}

	var ls []it.Layer
	for _, l := range layers {
		ls = append(ls, it.Layer{MediaType: ocispec.MediaTypeImageLayerGzip, Blob: it.Gzip(t, l), DiffID: digestOf(l)})
	}
	layout := t.TempDir()
	it.New(t, ocispec.ImageConfig{}, ls...).WriteLayout(t, layout, "corpus")
	bundle := filepath.Join(t.TempDir(), "bundle")
	if out, err := exec.Command("umoci", "unpack", "--image", layout+":corpus", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	want, got := tree(t, filepath.Join(bundle, "rootfs")), tree(t, ours)
	if len(want) < 20 {
		t.Fatalf("umoci tree suspiciously small: %v", want)
	}
	if !strings.Contains(strings.Join(want, "\n"), "xattr=hello") {
		t.Error("umoci tree has no xattr: the comparison would not cover them")
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("trees differ\nours:\n%s\numoci:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func digestOf(b []byte) digest.Digest { return digest.FromBytes(b) }

// tree describes every path under root: type, mode, owner, link target or
// content hash, link count and user xattr.
func tree(t *testing.T, root string) []string {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(root, p)
		desc := fmt.Sprintf("%s %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			desc += fmt.Sprintf(" %x nlink=%d", sha256.Sum256(b), st.Nlink)
			buf := make([]byte, 64)
			if n, err := unix.Lgetxattr(p, "user.cocoon", buf); err == nil {
				desc += " xattr=" + string(buf[:n])
			}
		}
		out = append(out, desc)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestCorpusSemantics(t *testing.T) {
	root, err := applyAll(t, corpus(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"old", "usr/share", "opt/data/a", "opt/data/sub"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s survived its whiteout: %v", gone, err)
		}
	}
	a, _ := os.Stat(filepath.Join(root, "usr/bin/tool"))
	b, _ := os.Stat(filepath.Join(root, "usr/bin/tool3"))
	if !os.SameFile(a, b) {
		t.Error("hard link to a lower layer's file is not the same inode")
	}
	if fi, _ := os.Stat(filepath.Join(root, "setuid")); fi.Mode()&fs.ModeSetuid == 0 {
		t.Error("setuid bit lost")
	}
}

func TestHostileLayers(t *testing.T) {
	outside := t.TempDir()
	cases := []struct {
		name    string
		entries []it.Entry
		opts    Options
		want    error
	}{
		{"dotdot name", []it.Entry{it.File("../evil", "x", 0o644)}, Options{}, ErrPathTraversal},
		{"dotdot deep", []it.Entry{it.File("a/../../evil", "x", 0o644)}, Options{}, ErrPathTraversal},
		{"absolute symlink escape", []it.Entry{it.Symlink("esc", outside), it.File("esc/pwned", "x", 0o644)}, Options{}, ErrSymlinkEscape},
		{"relative symlink climb", []it.Entry{it.Symlink("up", "../../../.."+outside), it.File("up/pwned", "x", 0o644)}, Options{}, ErrSymlinkEscape},
		{"symlink loop", []it.Entry{it.Symlink("l1", "l2"), it.Symlink("l2", "l1"), it.File("l1/x", "x", 0o644)}, Options{}, ErrSymlinkEscape},
		{"hardlink traversal", []it.Entry{it.Link("h", "../../etc/passwd")}, Options{}, ErrPathTraversal},
		{"hardlink through symlink", []it.Entry{it.Symlink("esc", outside), it.Link("h", "esc/secret")}, Options{}, ErrSymlinkEscape},
		{"device", []it.Entry{{Header: tar.Header{Typeflag: tar.TypeChar, Name: "mem", Mode: 0o600, Devmajor: 1, Devminor: 1}}}, Options{}, ErrDevice},
		{"overlay xattr", []it.Entry{withXattr(it.Dir("d", 0o755), "trusted.overlay.opaque", "y")}, Options{}, ErrBadEntry},
		{"bomb", []it.Entry{it.File("big", strings.Repeat("0", 1<<20), 0o644)}, Options{MaxSize: 64 << 10}, ErrTooLarge},
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			_, err := Apply(context.Background(), root, bytes.NewReader(it.Tar(t, c.entries...)), c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if _, err := os.Lstat(filepath.Join(outside, "pwned")); err == nil {
				t.Fatal("wrote outside the root")
			}
		})
	}
}

func TestInRootSymlinkFollowedAndDevicesWhenAllowed(t *testing.T) {
	root := t.TempDir()
	entries := []it.Entry{
		it.Dir("usr", 0o755), it.Symlink("lnk", "./usr/../usr"), it.File("lnk/f", "f", 0o644),
		{Header: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o600}},
	}
	if os.Geteuid() == 0 {
		entries = append(entries, it.Entry{Header: tar.Header{Typeflag: tar.TypeChar, Name: "null", Mode: 0o666, Devmajor: 1, Devminor: 3}})
	}
	if _, err := Apply(context.Background(), root, bytes.NewReader(it.Tar(t, entries...)), Options{AllowDevices: true}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "usr/f")); err != nil || string(b) != "f" {
		t.Fatalf("usr/f: %q %v", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(root, "fifo")); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		t.Fatalf("fifo: %v", err)
	}
}

// TestFinishStaysInTheLayer: directories this layer made, then replaced by
// symlinks out of it, are not followed when the layer is finished.
func TestFinishStaysInTheLayer(t *testing.T) {
	it.RequireRoot(t)
	outside := t.TempDir()
	os.Chmod(outside, 0o700)
	lower := t.TempDir()
	if err := os.WriteFile(filepath.Join(lower, "f"), []byte("lower"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(lower, "a"), 0o777)
	dir := t.TempDir()
	l, err := Apply(context.Background(), dir, bytes.NewReader(it.Tar(t,
		it.File("a/b", "b", 0o644), it.Link("d/x", "f"),
		it.Symlink("a", outside), it.Symlink("d", outside))), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Finish([]string{lower}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(outside); fi.Mode().Perm() != 0o700 {
		t.Errorf("the target of a replaced directory got mode %v", fi.Mode().Perm())
	}
	if _, err := os.Lstat(filepath.Join(outside, "x")); err == nil {
		t.Error("hard link made through a symlink, outside the layer")
	}
}

// TestBudgetShared: layers given one Budget share it, whatever their own
// MaxSize; a stream of exactly the budget passes.
func TestBudgetShared(t *testing.T) {
	layer := it.Tar(t, it.File("f", strings.Repeat("x", 300<<10), 0o644))
	b := NewBudget(int64(len(layer)) * 2)
	for i := range 2 {
		if _, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(layer), Options{Budget: b}); err != nil {
			t.Fatalf("layer %d within the budget: %v", i, err)
		}
	}
	if _, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(layer), Options{Budget: b}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("third layer: %v, want ErrTooLarge", err)
	}
}
