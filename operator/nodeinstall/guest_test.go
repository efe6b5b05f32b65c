package nodeinstall

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func tarOf(t testing.TB, entries ...tar.Header) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		body := []byte("content of " + h.Name)
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(body)
		}
	}
	tw.Close()
	return b.Bytes()
}

// extractGuest writes the guest files of a layer (a tar stream) into dir,
// as PullGuest does with each layer.
func extractGuest(r io.Reader, dir string) error {
	return walkGuest(r, func(name string, r io.Reader) error { return writeGuestFile(dir, name, r) })
}

// TestExtractGuest: the guest's files are written; anything else (other
// names, links, paths leaving the directory) is refused.
func TestExtractGuest(t *testing.T) {
	dir := t.TempDir()
	good := tarOf(t, tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		tar.Header{Name: "vmlinuz", Typeflag: tar.TypeReg, Mode: 0o644},
		tar.Header{Name: "./initramfs.cpio.gz", Typeflag: tar.TypeReg, Mode: 0o644})
	if err := extractGuest(bytes.NewReader(good), dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "initramfs.cpio.gz")); string(b) != "content of ./initramfs.cpio.gz" {
		t.Errorf("initramfs: %q", b)
	}
	for name, h := range map[string]tar.Header{
		"other name":    {Name: "etc/passwd", Typeflag: tar.TypeReg},
		"leaving":       {Name: "../vmlinuz", Typeflag: tar.TypeReg},
		"symlink":       {Name: "vmlinuz", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"},
		"hard link":     {Name: "vmlinuz", Typeflag: tar.TypeLink, Linkname: "initramfs.cpio.gz"},
		"subdirectory":  {Name: "boot/", Typeflag: tar.TypeDir},
		"twice (a dup)": {Name: "vmlinuz", Typeflag: tar.TypeReg},
	} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			entries := []tar.Header{h}
			if name == "twice (a dup)" {
				entries = append(entries, h)
			}
			if err := extractGuest(bytes.NewReader(tarOf(t, entries...)), d); !errors.Is(err, ErrGuestImage) {
				t.Errorf("extract: %v, want ErrGuestImage", err)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(d), "vmlinuz")); err == nil {
				t.Error("a file was written outside the directory")
			}
		})
	}
}

// FuzzExtractGuest: any layer either extracts known files into the
// directory or fails with ErrGuestImage; nothing else is written.
func FuzzExtractGuest(f *testing.F) {
	f.Add(tarOf(f, tar.Header{Name: "vmlinuz", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(f, tar.Header{Name: "../x", Typeflag: tar.TypeReg}))
	f.Add([]byte("not a tar"))
	whole := tarOf(f, tar.Header{Name: "vmlinuz", Typeflag: tar.TypeReg, Mode: 0o644})
	f.Add(whole[:512+4]) // a body cut short
	f.Fuzz(func(t *testing.T, b []byte) {
		root := t.TempDir()
		dir := filepath.Join(root, "guest")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := extractGuest(bytes.NewReader(b), dir); err != nil && !errors.Is(err, ErrGuestImage) {
			t.Fatalf("untyped error %v", err)
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !guestFiles[e.Name()] || !e.Type().IsRegular() {
				t.Fatalf("unexpected %s", e.Name())
			}
		}
		if all, _ := os.ReadDir(root); len(all) != 1 {
			t.Fatalf("written beside the directory: %v", all)
		}
	})
}
