package bundle

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMountManyLayers: more layers than mount(2)'s one page of options can
// name by path are mounted through descriptors, the top layer winning.
func TestMountManyLayers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: mounting needs root (CI runs as root)")
	}
	root := filepath.Join(t.TempDir(), strings.Repeat("long-directory-name-", 4))
	var layers []string
	for i := range 80 {
		l := filepath.Join(root, fmt.Sprintf("layer-%03d-%s", i, strings.Repeat("x", 20)))
		if err := os.MkdirAll(l, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(l, fmt.Sprintf("f%d", i)), []byte("x"), 0o644)
		os.WriteFile(filepath.Join(l, "top"), []byte(fmt.Sprint(i)), 0o644)
		layers = append(layers, l)
	}
	if n := len(strings.Join(layers, ":")); n < 4096 {
		t.Fatalf("lowerdir of %d bytes would fit a page", n)
	}
	dir := filepath.Join(t.TempDir(), "bundle")
	if err := MountRootfs(dir, layers); err != nil {
		t.Fatal(err)
	}
	defer Remove(dir)
	if b, err := os.ReadFile(filepath.Join(dir, RootfsDir, "top")); err != nil || string(b) != "79" {
		t.Fatalf("top = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, RootfsDir, "f0")); err != nil {
		t.Fatal("the lowest layer is not visible")
	}
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("Remove left %s", dir)
	}
	if err := MountRootfs(filepath.Join(t.TempDir(), "a,b"), layers[:1]); err == nil {
		t.Fatal("a bundle path overlayfs cannot name was accepted")
	}
}
