package shim

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cocoon-cc/cocoon/agent"
	"github.com/cocoon-cc/cocoon/agent/policy"
)

// TestGuestMounts: the kubelet's mounts become copies in a real agent's
// shared directory and emptyDir storages; a hostPath is left for the
// policy; a sync copies what changed.
func TestGuestMounts(t *testing.T) {
	ctx := context.Background()
	e, err := policy.New(ctx, policy.AllowAll())
	if err != nil {
		t.Fatal(err)
	}
	shared := t.TempDir()
	a, err := agent.New(agent.Config{StateDir: t.TempDir(), SharedDir: shared, Policy: e})
	if err != nil {
		t.Fatal(err)
	}
	pod := filepath.Join(t.TempDir(), "pods", "uid")
	vol := func(kind, name string) string {
		d := filepath.Join(pod, "volumes", "kubernetes.io~"+kind, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	sec, mem, disk := vol("secret", "tls"), vol("empty-dir", "cache"), vol("empty-dir", "scratch")
	big := bytes.Repeat([]byte{7}, 2*copyChunkSize+1)
	os.WriteFile(filepath.Join(sec, "key"), big, 0o400)
	os.Symlink("key", filepath.Join(sec, "tls.key"))
	if err := unix.Mount("tmpfs", mem, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mem, unix.MNT_DETACH) })
	os.Chown(disk, 0, 2000)
	os.Chmod(disk, 0o777|os.ModeSetgid)
	hosts := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644)
	spec := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/tls", Type: "bind", Source: sec, Options: []string{"rbind", "ro"}},
		{Destination: "/cache", Type: "bind", Source: mem, Options: []string{"rbind"}},
		{Destination: "/scratch", Source: disk, Options: []string{"rbind"}},
		{Destination: "/etc/hosts", Type: "bind", Source: hosts},
		{Destination: "/data", Type: "bind", Source: "/srv/data"},
	}}
	storages, copies, err := guestMounts(ctx, a, nil, "c1", spec)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range spec.Mounts {
		got = append(got, m.Source)
	}
	if want := []string{"proc", copyName("c1", sec), agent.EphemeralPath + "/cache", agent.LocalPath + "/scratch",
		copyName("c1", hosts), "/srv/data"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("sources %q, want %q", got, want)
	}
	if len(storages) != 2 || storages[0].Options[0] != "size=1024k" || storages[1].FsGroup.GetGroupId() != 2000 || len(copies) != 2 {
		t.Fatalf("storages %v, %d copies", storages, len(copies))
	}
	guest := func(p string) string { return filepath.Join(shared, strings.TrimPrefix(p, agent.SharedPath)) }
	key := filepath.Join(guest(copyName("c1", sec)), "tls.key")
	if b, err := os.ReadFile(key); err != nil || !bytes.Equal(b, big) {
		t.Fatalf("copied key: %d bytes, %v", len(b), err)
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o400 {
		t.Errorf("copied key mode %v", fi.Mode())
	}
	// A change on the host reaches the guest at the next sync.
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n10.0.0.2 db\n"), 0o644)
	for _, c := range copies {
		if err := c.sync(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(guest(copyName("c1", hosts))); !strings.Contains(string(b), "db") {
		t.Errorf("hosts after the change: %q", b)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(guest(copyName("c1", hosts)), &st); err != nil || st.Mode&0o777 != 0o644 {
		t.Errorf("hosts mode %o %v", st.Mode, err)
	}
}
