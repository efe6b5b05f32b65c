package nodeinstall

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cocoon-cc/cocoon/internal/testutil/containerdtest"
)

// TestHostProcesses: a service runs as a host process in containerd's
// cgroups (a real containerd's), is left alone while its arguments stay,
// started again for new ones or a restart, and stopped.
func TestHostProcesses(t *testing.T) {
	ctrd := containerdtest.Start(t, containerdtest.Options{})
	h := HostProcesses{RunDir: t.TempDir(), Containerd: Containerd{ConfigPath: ctrd.ConfigPath()}}
	ctx := context.Background()
	t.Cleanup(func() { h.Stop(ctx, "sleep") })
	argv := []string{"/usr/bin/sleep", "1000"}
	how, err := h.Ensure(ctx, "sleep", argv, false)
	if err != nil {
		t.Fatal(err)
	}
	first, ok := h.running("sleep")
	if !ok || how != fmt.Sprintf("host process %d", first) || !slices.Equal(cmdline(first), argv) {
		t.Fatalf("Ensure: %q, running %d %v", how, first, ok)
	}
	ctrdPID, err := findContainerd(ctrd.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", ctrdPID))
	if got, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", first)); string(got) != string(want) {
		t.Errorf("the service's cgroups:\n%s\ncontainerd's:\n%s", got, want)
	}
	if _, err := h.Ensure(ctx, "sleep", argv, false); err != nil {
		t.Fatal(err)
	}
	if pid, _ := h.running("sleep"); pid != first {
		t.Errorf("Ensure with the same arguments started it again: %d, was %d", pid, first)
	}
	if _, err := h.Ensure(ctx, "sleep", []string{"/usr/bin/sleep", "1001"}, false); err != nil {
		t.Fatal(err)
	}
	second, _ := h.running("sleep")
	if second == first || alive(first) {
		t.Errorf("new arguments: pid %d, the old %d alive %v", second, first, alive(first))
	}
	if _, err := h.Ensure(ctx, "sleep", []string{"/usr/bin/sleep", "1001"}, true); err != nil {
		t.Fatal(err)
	}
	if third, _ := h.running("sleep"); third == second {
		t.Error("restart kept the process")
	}
	if err := h.Stop(ctx, "sleep"); err != nil {
		t.Fatal(err)
	}
	if pid, ok := h.running("sleep"); ok {
		t.Errorf("still running: %d", pid)
	}
	if _, err := os.Stat(filepath.Join(h.RunDir, "sleep.pid")); !os.IsNotExist(err) {
		t.Errorf("pid file left: %v", err)
	}
	if _, err := h.Ensure(ctx, "missing", []string{"/nonexistent/missing"}, false); err == nil {
		t.Error("a missing binary started")
	}
}
