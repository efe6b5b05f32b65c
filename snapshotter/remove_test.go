package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestInUse: mountinfo lines naming the root as an overlay layer or
// bind-mounting a directory below it (also through another mount of its
// filesystem) make it in use; others do not.
func TestInUse(t *testing.T) {
	const base = "22 1 254:0 / / rw - ext4 /dev/vda rw\n" +
		"30 22 0:25 / /run rw - tmpfs tmpfs rw\n"
	root := "/var/lib/containerd/io.containerd.snapshotter.v1.cocoon"
	for name, tc := range map[string]struct {
		info string
		root string
		want bool
	}{
		"nothing":      {base, root, false},
		"overlay":      {base + "40 22 0:50 / /run/c/rootfs rw - overlay overlay rw,lowerdir=" + root + "/snapshots/2/fs:" + root + "/snapshots/1/fs,upperdir=/x,workdir=/y\n", root, true},
		"bind":         {base + "41 22 254:0 " + root + "/snapshots/3/fs /run/c/rootfs ro - ext4 /dev/vda rw\n", root, true},
		"other dir":    {base + "41 22 254:0 /var/lib/other /run/c/rootfs ro - ext4 /dev/vda rw\n", root, false},
		"prefix only":  {base + "41 22 254:0 " + root + "x/1 /run/c/rootfs ro - ext4 /dev/vda rw\n", root, false},
		"on tmpfs":     {base + "42 30 0:25 /cocoon/snapshots/1/fs /mnt/x ro - tmpfs tmpfs rw\n", "/run/cocoon", true},
		"other fs":     {base + "42 22 0:26 /cocoon/snapshots/1/fs /mnt/x ro - tmpfs tmpfs rw\n", "/run/cocoon", false},
		"escaped path": {base + "43 22 254:0 /a\\040b/snapshots/1/fs /mnt/y ro - ext4 /dev/vda rw\n", "/a b", true},
		"garbage":      {"x\n - \n1 2 3\n", root, false},
	} {
		if got := InUse([]byte(tc.info), tc.root); got != tc.want {
			t.Errorf("%s: InUse = %v, want %v", name, got, tc.want)
		}
	}
}

// TestRemoveUnused: a root with a snapshot bind-mounted stays until the
// mount goes, then it is removed.
func TestRemoveUnused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: mounting needs root; CI runs as root")
	}
	dir := t.TempDir()
	root, target := filepath.Join(dir, "root"), filepath.Join(dir, "target")
	snap := filepath.Join(root, "snapshots", "1", "fs")
	for _, d := range []string{snap, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mount(snap, target, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(target, syscall.MNT_DETACH) })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := RemoveUnused(ctx, root, 50*time.Millisecond); err == nil {
		t.Fatal("RemoveUnused removed a mounted snapshot")
	}
	if _, err := os.Stat(snap); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- RemoveUnused(context.Background(), root, 50*time.Millisecond) }()
	if err := syscall.Unmount(target, 0); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("root left: %v", err)
	}
}

func FuzzInUse(f *testing.F) {
	f.Add([]byte("22 1 254:0 / / rw - ext4 /dev/vda rw\n41 22 254:0 /r/s /m ro - ext4 /dev/vda rw\n"), "/r")
	f.Fuzz(func(t *testing.T, info []byte, root string) { InUse(info, root) })
}
