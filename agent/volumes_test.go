package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// TestStorages: emptyDir storages are made once per pod, as a tmpfs of the
// asked size or a directory owned by the fsGroup, and refused when odd.
func TestStorages(t *testing.T) {
	a := testAgent(t)
	t.Cleanup(a.teardownStorages)
	mem := &pb.Storage{Driver: StorageDriverEphemeral, Source: "tmpfs", Fstype: "tmpfs", MountPoint: EphemeralPath + "/cache",
		Options: []string{"size=1m"}}
	disk := &pb.Storage{Driver: StorageDriverLocal, Source: "local", Fstype: "local", MountPoint: LocalPath + "/scratch",
		Options: []string{"mode=0770"}, FsGroup: &pb.FSGroup{GroupId: 1234}}
	image := &pb.Storage{Driver: pb.StorageDriverImageGuestPull}
	for range 2 { // a second container shares them
		if err := a.setupStorages(context.Background(), []*pb.Storage{image, mem, disk}); err != nil {
			t.Fatal(err)
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(a.cfg.SandboxDir, "ephemeral", "cache"), &st); err != nil || st.Type != unix.TMPFS_MAGIC ||
		st.Blocks*uint64(st.Bsize) != 1<<20 {
		t.Errorf("ephemeral storage: %v type %#x size %d", err, st.Type, st.Blocks*uint64(st.Bsize))
	}
	fi, err := os.Stat(filepath.Join(a.cfg.SandboxDir, "storage", "scratch"))
	if err != nil || fi.Mode()&os.ModePerm != 0o770 || fi.Mode()&os.ModeSetgid == 0 || fi.Sys().(*syscall.Stat_t).Gid != 1234 {
		t.Errorf("local storage: %v %v", err, fi)
	}
	for _, bad := range []*pb.Storage{
		{Driver: StorageDriverEphemeral, Source: "tmpfs", Fstype: "tmpfs", MountPoint: EphemeralPath + "/../../etc"},
		{Driver: StorageDriverEphemeral, Source: "tmpfs", Fstype: "tmpfs", MountPoint: EphemeralPath + "/a/b"},
		{Driver: StorageDriverEphemeral, Source: "/dev/sda", Fstype: "ext4", MountPoint: EphemeralPath + "/x"},
		{Driver: StorageDriverEphemeral, Source: "tmpfs", Fstype: "tmpfs", MountPoint: EphemeralPath + "/y", Options: []string{"size=1m,uid=0"}},
		{Driver: StorageDriverLocal, MountPoint: LocalPath + "/z", Options: []string{"size=1m"}},
		{Driver: StorageDriverLocal, MountPoint: LocalPath + "/z", Options: []string{"mode=4777"}},
		{Driver: StorageDriverLocal, MountPoint: EphemeralPath + "/cache"},
	} {
		if err := a.setupStorages(context.Background(), []*pb.Storage{bad}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%v: %v", bad, err)
		}
	}
	// A blk storage is an encrypted scratch disk, nothing else.
	scratch := func(opts ...string) *pb.Storage {
		return &pb.Storage{Driver: StorageDriverBlock, Source: "10/00", Fstype: "ext4", MountPoint: LocalPath + "/MTAvMDA=",
			DriverOptions: opts}
	}
	for _, bad := range []*pb.Storage{
		scratch(DriverOptionCreateFS),
		scratch(DriverOptionEphemeralKey),
		scratch("encryption_key=kbs:///default/k/k", DriverOptionCreateFS),
		{Driver: StorageDriverBlock, Source: "10/00", Fstype: "xfs", MountPoint: LocalPath + "/x",
			DriverOptions: []string{DriverOptionEphemeralKey, DriverOptionCreateFS}},
	} {
		if err := a.setupStorages(context.Background(), []*pb.Storage{bad}); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

// TestBindSource: bind mounts map to the copies, the pod's storages or, for
// a host path the policy let through, a guest directory; never elsewhere.
func TestBindSource(t *testing.T) {
	a := testAgent(t)
	t.Cleanup(a.teardownStorages)
	ctx := context.Background()
	if _, err := a.CopyFile(ctx, &pb.CopyFileRequest{Path: SharedPath + "/c-0123456789abcdef-cfg", FileMode: unix.S_IFDIR | 0o755}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CopyFile(ctx, &pb.CopyFileRequest{Path: SharedPath + "/c-0123456789abcdef-evil", FileMode: unix.S_IFLNK | 0o777, Data: []byte("/")}); err != nil {
		t.Fatal(err)
	}
	if err := a.setupStorages(context.Background(), []*pb.Storage{{Driver: StorageDriverLocal, MountPoint: LocalPath + "/scratch"}}); err != nil {
		t.Fatal(err)
	}
	bind := func(src string) (string, error) {
		return a.bindSource(specs.Mount{Destination: "/d", Type: "bind", Source: src})
	}
	for src, want := range map[string]string{
		SharedPath + "/c-0123456789abcdef-cfg": filepath.Join(a.cfg.SharedDir, "c-0123456789abcdef-cfg"),
		LocalPath + "/scratch":                 filepath.Join(a.cfg.SandboxDir, "storage", "scratch"),
		"/var/lib/data":                        filepath.Join(a.cfg.SandboxDir, "hostpath", "var", "lib", "data"),
		"/var/lib/../../etc":                   filepath.Join(a.cfg.SandboxDir, "hostpath", "etc"),
	} {
		if got, err := bind(src); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", src, got, err, want)
		}
	}
	for _, src := range []string{SharedPath + "/c-0123456789abcdef-evil", SharedPath + "/missing", LocalPath + "/other",
		EphemeralPath + "/scratch", "/run/kata-containers/sandbox/hostpath", "relative", SharedPath} {
		if got, err := bind(src); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "mount /d") {
			t.Errorf("%s: %q %v, want refused", src, got, err)
		}
	}
	// Copies of a removed container go; others stay.
	a.removeShared("c")
	if _, err := os.Lstat(filepath.Join(a.cfg.SharedDir, "c-0123456789abcdef-cfg")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("copy of a removed container: %v", err)
	}
}

// FuzzStorageOptions: any storage the host sends is set up or refused with
// ErrInvalidArgument, its tmpfs options only sizes.
func FuzzStorageOptions(f *testing.F) {
	f.Add(StorageDriverEphemeral, "tmpfs", "size=64m,nr_inodes=1k,mode=0777")
	f.Add(StorageDriverLocal, "local", "mode=0770")
	f.Fuzz(func(t *testing.T, driver, source, options string) {
		s := &pb.Storage{Driver: driver, Source: source, Fstype: source, Options: strings.Split(options, ",")}
		_, data, err := storageOptions(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatal(err)
			}
			return
		}
		for _, o := range strings.Split(data, ",") {
			if o != "" && !strings.HasPrefix(o, "size=") && !strings.HasPrefix(o, "nr_inodes=") {
				t.Fatalf("option %q passed", o)
			}
		}
	})
}

// FuzzBindSource: any source maps into the shared directory or the
// sandbox directory, or is refused with ErrInvalidArgument.
func FuzzBindSource(f *testing.F) {
	a := testAgent(f)
	for _, s := range []string{SharedPath + "/c-0123456789abcdef-cfg", LocalPath + "/x", "/var/lib/data", "/run/kata-containers/x/../y", "a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		got, err := a.bindSource(specs.Mount{Destination: "/d", Type: "bind", Source: src})
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatal(err)
			}
			return
		}
		if !strings.HasPrefix(got, a.cfg.SharedDir+"/") && !strings.HasPrefix(got, a.cfg.SandboxDir+"/") {
			t.Fatalf("%q mapped to %q", src, got)
		}
	})
}
