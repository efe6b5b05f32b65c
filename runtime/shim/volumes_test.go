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
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// TestGuestMounts: the kubelet's mounts become copies in a real agent's
// shared directory and emptyDir storages; a hostPath is left for the
// policy; a sync copies what changed.
func TestGuestMounts(t *testing.T) {
	ctx := context.Background()
	a, shared := copyAgent(t)
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

// copyAgent is a real agent (allowing everything) whose shared directory
// the test reads.
func copyAgent(t *testing.T) (*agent.Agent, string) {
	t.Helper()
	e, err := policy.New(context.Background(), policy.AllowAll())
	if err != nil {
		t.Fatal(err)
	}
	shared := t.TempDir()
	a, err := agent.New(agent.Config{StateDir: t.TempDir(), SharedDir: shared, Policy: e})
	if err != nil {
		t.Fatal(err)
	}
	return a, shared
}

// TestVolumeUpdateRemoves: a ConfigMap update as the kubelet's atomic
// writer makes it (a new timestamped directory, the "..data" swap, then the
// removed key's link and the old directory deleted) leaves the guest's copy
// as the host's: the removed key and the old directory are gone.
func TestVolumeUpdateRemoves(t *testing.T) {
	ctx := context.Background()
	a, shared := copyAgent(t)
	vol := filepath.Join(t.TempDir(), "pods", "uid", "volumes", "kubernetes.io~configmap", "cfg")
	write := func(ts string, keys map[string]string) {
		os.MkdirAll(filepath.Join(vol, ts), 0o755)
		for k, v := range keys {
			os.WriteFile(filepath.Join(vol, ts, k), []byte(v), 0o644)
			os.Symlink(filepath.Join("..data", k), filepath.Join(vol, k))
		}
		os.Symlink(ts, filepath.Join(vol, "..data_tmp"))
		os.Rename(filepath.Join(vol, "..data_tmp"), filepath.Join(vol, "..data"))
	}
	write("..2026_12_04_1", map[string]string{"a": "1", "b": "1"})
	spec := &specs.Spec{Mounts: []specs.Mount{{Destination: "/etc/cfg", Type: "bind", Source: vol, Options: []string{"rbind", "ro"}}}}
	_, copies, err := guestMounts(ctx, a, nil, "c1", spec)
	if err != nil {
		t.Fatal(err)
	}
	write("..2026_12_04_2", map[string]string{"a": "2"})
	os.Remove(filepath.Join(vol, "b"))
	os.RemoveAll(filepath.Join(vol, "..2026_12_04_1"))
	if err := copies[0].sync(ctx, a); err != nil {
		t.Fatal(err)
	}
	guest := filepath.Join(shared, strings.TrimPrefix(copyName("c1", vol), agent.SharedPath))
	entries, _ := os.ReadDir(guest)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "..2026_12_04_2 ..data a" {
		t.Errorf("guest copy after the update: %s", got)
	}
	if b, err := os.ReadFile(filepath.Join(guest, "a")); err != nil || string(b) != "2" {
		t.Errorf("updated key: %q %v", b, err)
	}
}

// TestTerminationMessage: the kubelet's termination-message file is known
// among a container's copies, WaitProcess names its path in the container,
// and the agent's answer lands in the host's file: the message (its end,
// as the kubelet reads it), or the notice that the policy withheld it.
func TestTerminationMessage(t *testing.T) {
	ctx := context.Background()
	a, _ := copyAgent(t)
	host := filepath.Join(t.TempDir(), "pods", "uid", "containers", "app", "0a1b2c3d")
	os.MkdirAll(filepath.Dir(host), 0o755)
	os.WriteFile(host, nil, 0o666)
	hosts := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644)
	spec := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/etc/hosts", Type: "bind", Source: hosts},
		{Destination: "/dev/termination-log", Type: "bind", Source: host},
	}}
	_, copies, err := guestMounts(ctx, a, nil, "c1", spec)
	if err != nil {
		t.Fatal(err)
	}
	term := terminationLogOf(copies)
	if term.terminationPath() != "/dev/termination-log" || terminationLogOf(copies[:1]).terminationPath() != "" {
		t.Fatalf("termination file %+v", term)
	}
	long := strings.Repeat("x", agent.TerminationMessageMax) + "end"
	for _, tc := range []struct {
		w    *pb.WaitProcessResponse
		want string
	}{
		{&pb.WaitProcessResponse{TerminationMessage: []byte("bye")}, "bye"},
		{&pb.WaitProcessResponse{}, "bye"}, // no message: the file stays
		{&pb.WaitProcessResponse{TerminationMessage: []byte(long)}, long[len(long)-agent.TerminationMessageMax:]},
		{&pb.WaitProcessResponse{TerminationMessageWithheld: true}, WithheldTerminationMessage},
	} {
		if err := term.deliverTermination(tc.w); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(host); string(b) != tc.want {
			t.Errorf("host file after %v: %q", tc.w, b)
		}
	}
	if err := (*copied)(nil).deliverTermination(&pb.WaitProcessResponse{TerminationMessage: []byte("x")}); err != nil {
		t.Errorf("no termination file: %v", err)
	}
}
