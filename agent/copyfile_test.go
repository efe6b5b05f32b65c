package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cocoon-cc/cocoon/agent/policy"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

func testAgent(t testing.TB) *Agent {
	t.Helper()
	return testAgentWith(t, policy.AllowAll())
}

// testAgentWith is an agent under the policy rego.
func testAgentWith(t testing.TB, rego string) *Agent {
	t.Helper()
	e, err := policy.New(context.Background(), rego)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{StateDir: t.TempDir(), Policy: e})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestCopyFile(t *testing.T) {
	a := testAgent(t)
	ctx := context.Background()
	p := func(name string) string { return SharedPath + "/" + name }
	copyFile := func(r *pb.CopyFileRequest) error { _, err := a.CopyFile(ctx, r); return err }

	// A file in two chunks appears only once complete, with its mode.
	if err := copyFile(&pb.CopyFileRequest{Path: p("pod/vol/key"), FileSize: 6, FileMode: 0o100640, DirMode: 0o750, Data: []byte("sec")}); err != nil {
		t.Fatal(err)
	}
	final := filepath.Join(a.cfg.SharedDir, "pod/vol/key")
	if _, err := os.Stat(final); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("half a file is visible: %v", err)
	}
	if err := copyFile(&pb.CopyFileRequest{Path: p("pod/vol/key"), FileSize: 6, FileMode: 0o100640, Offset: 3, Data: []byte("ret")}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(final); err != nil || string(b) != "secret" {
		t.Fatalf("file: %q %v", b, err)
	}
	if st, _ := os.Stat(final); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", st.Mode())
	}
	// Replacing it is atomic; a directory and a symlink (ConfigMap's ..data layout).
	for _, r := range []*pb.CopyFileRequest{
		{Path: p("pod/vol/key"), FileSize: 2, FileMode: 0o100600, Data: []byte("v2")},
		{Path: p("pod/cm/..2026_12_04"), FileMode: unix.S_IFDIR | 0o755},
		{Path: p("pod/cm/..data"), FileMode: unix.S_IFLNK | 0o777, Data: []byte("..2026_12_04")},
		{Path: p("pod/empty"), FileSize: 0, FileMode: 0o100644},
	} {
		if err := copyFile(r); err != nil {
			t.Fatalf("%s: %v", r.Path, err)
		}
	}
	if b, _ := os.ReadFile(final); string(b) != "v2" {
		t.Errorf("replaced file: %q", b)
	}
	if target, err := os.Readlink(filepath.Join(a.cfg.SharedDir, "pod/cm/..data")); err != nil || target != "..2026_12_04" {
		t.Errorf("symlink: %q %v", target, err)
	}

	// Removals (Cocoon's): a file, a directory with what it holds, a
	// symlink but not what it points at; removing what is gone is no error.
	for _, name := range []string{"pod/vol/key", "pod/cm", "pod/gone"} {
		if err := copyFile(&pb.CopyFileRequest{Path: p(name), Remove: true}); err != nil {
			t.Errorf("remove %s: %v", name, err)
		}
		if _, err := os.Lstat(filepath.Join(a.cfg.SharedDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not removed: %v", name, err)
		}
	}

	// Nothing outside the shared directory, whatever the path or links say.
	outside := t.TempDir()
	if err := copyFile(&pb.CopyFileRequest{Path: p("pod/esc"), FileMode: unix.S_IFLNK | 0o777, Data: []byte(outside)}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*pb.CopyFileRequest{
		{Path: "/etc/passwd", FileSize: 1, Data: []byte("x")},
		{Path: p("../../../etc/x"), FileSize: 1, Data: []byte("x")},
		{Path: SharedPath, FileMode: unix.S_IFDIR},
		{Path: p("pod/esc/planted"), FileSize: 1, Data: []byte("x")},
		{Path: p("pod/big"), FileSize: 1, Data: []byte("too long")},
		{Path: p("pod/neg"), FileSize: 1, Offset: -1, Data: []byte("x")},
		{Path: p("pod/key.tmp"), FileSize: 1, Data: []byte("x")},
		{Path: p("pod/dev"), FileMode: unix.S_IFCHR | 0o666},
		{Path: SharedPath, Remove: true},
		{Path: p("../x"), Remove: true},
		{Path: p("pod/esc/planted"), Remove: true},
	} {
		if err := copyFile(r); err == nil {
			t.Errorf("%s (mode %#o): accepted", r.Path, r.FileMode)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("wrote outside the shared directory: %v", entries)
	}
}
