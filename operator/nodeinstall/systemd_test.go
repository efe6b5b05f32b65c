package nodeinstall

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// systemdContainer is a systemd running as PID 1 of its own PID, mount,
// UTS, IPC, network and cgroup namespaces, on a root of its own: the
// host's /usr read-only, its /etc read-only with /etc/systemd/system
// empty and writable, fresh /run, /tmp and /var, /proc/sys and /sys
// read-only, cgroups under a test cgroup. Booting the host's root instead
// would run the host's units (tmpfiles cleans /tmp).
type systemdContainer struct {
	pid     int    // its PID 1, in the test's PID namespace
	root    string // its root, from the test's mount namespace
	cgroups []string
}

// setup is the container's shell, run as PID 1 of the new namespaces
// before it execs systemd.
const setup = `set -eu
R=$ROOTDIR
mount -t tmpfs -o mode=755 sdroot $R
cd $R
mkdir -p usr etc proc sys dev run tmp var oldroot
for l in bin sbin lib lib64; do [ -L /$l ] && ln -s "$(readlink /$l)" $l; done
mount --rbind /usr usr && mount -o remount,bind,ro usr
mount --rbind /etc etc && mount -o remount,bind,ro etc
mount -t tmpfs -o mode=755 units etc/systemd/system
cp -r "$UNITS"/. etc/systemd/system/
for d in null zero full random urandom tty; do touch dev/$d && mount --bind /dev/$d dev/$d; done
mkdir dev/shm dev/pts && mount -t tmpfs shm dev/shm
for d in run tmp var; do mount -t tmpfs -o mode=755 $d $d; done
chmod 1777 tmp
mount -t proc proc proc
mount --bind proc/sys proc/sys && mount -o remount,bind,ro proc/sys
mount -t sysfs -o ro sysfs sys
mount -t tmpfs -o mode=755 cgroup sys/fs/cgroup
for h in $V1; do mkdir sys/fs/cgroup/$h && mount -t cgroup -o $h cgroup sys/fs/cgroup/$h; done
mkdir sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup sys/fs/cgroup/systemd
if [ -n "$V2" ]; then mkdir sys/fs/cgroup/unified && mount -t cgroup2 cgroup2 sys/fs/cgroup/unified; fi
pivot_root . oldroot
umount -l /oldroot
exec env -i container=cocoon-test /usr/lib/systemd/systemd --unit=cocoon-test.target
`

// startSystemd starts a systemdContainer with units (file name -> text)
// in its /etc/systemd/system, or skips when this host cannot.
func startSystemd(t *testing.T, units map[string]string) *systemdContainer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: a systemd container needs root; CI runs as root")
	}
	for _, bin := range []string{"/usr/lib/systemd/systemd", "/usr/bin/systemctl", "/usr/bin/unshare", "/usr/sbin/pivot_root"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s missing (scripts/install-deps.sh installs systemd and util-linux)", bin)
		}
	}
	unitDir := t.TempDir()
	units["cocoon-test.target"] = "[Unit]\nDescription=Cocoon's test container\nDefaultDependencies=no\n"
	for name, text := range units {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(unitDir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(unitDir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sc := &systemdContainer{}
	// The container's cgroups are the test's own, in each hierarchy.
	name := fmt.Sprintf("cocoon-systemd-test-%d", os.Getpid())
	var v1 []string
	v2 := ""
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range entries {
		dir := filepath.Join("/sys/fs/cgroup", e.Name(), name)
		switch {
		case e.Name() == "unified":
			v2 = "1"
		case e.Name() == "systemd":
		case fileExists(filepath.Join("/sys/fs/cgroup", e.Name(), "cgroup.procs")) && !strings.Contains(e.Name(), ","):
			v1 = append(v1, e.Name())
		default:
			continue
		}
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		sc.cgroups = append(sc.cgroups, dir)
	}
	if len(v1) == 0 {
		t.Skip("SKIP: the systemd container is written for cgroup v1 hosts with a name=systemd hierarchy (as this one)")
	}
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpuset", f))
		os.WriteFile(filepath.Join("/sys/fs/cgroup/cpuset", name, f), b, 0o644)
	}
	join := ""
	for _, dir := range sc.cgroups {
		join += fmt.Sprintf("echo $$ > %s/cgroup.procs; ", dir)
	}
	cmd := exec.Command("/bin/sh", "-c", join+`exec unshare --pid --fork --kill-child --mount --uts --ipc --net --cgroup --propagation private /bin/sh -c "$SETUP"`)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SETUP=" + setup, "UNITS=" + unitDir, "ROOTDIR=" + t.TempDir(), "V1=" + strings.Join(v1, " "), "V2=" + v2}
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.stop(t, cmd) })
	// PID 1 of the container: unshare's child, once it runs systemd.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		for _, c := range children(cmd.Process.Pid) {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); strings.HasSuffix(exe, "/systemd") {
				sc.pid = c
			}
		}
		if sc.pid != 0 && fileExists(fmt.Sprintf("/proc/%d/root/run/systemd/private", sc.pid)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd did not start in its container:\n%s", log.String())
		}
	}
	sc.root = fmt.Sprintf("/proc/%d/root", sc.pid)
	return sc
}

// stop kills the container (its PID 1, and with it its namespace) and
// removes its cgroups.
func (sc *systemdContainer) stop(t *testing.T, cmd *exec.Cmd) {
	if sc.pid != 0 {
		syscall.Kill(sc.pid, syscall.SIGKILL)
	}
	// unshare reaps its child, then exits; killed only when it does not.
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	for _, dir := range sc.cgroups {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			var dirs []string
			filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				os.Remove(dirs[i])
			}
			if !fileExists(dir) || time.Now().After(deadline) {
				break
			}
		}
		if fileExists(dir) {
			t.Errorf("cgroup %s left", dir)
		}
	}
}

// children are the pids whose parent is pid.
func children(pid int) []int {
	var out []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		i := strings.LastIndexByte(string(b), ')')
		if err != nil || i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			n, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			out = append(out, n)
		}
	}
	return out
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// journal is a unit's log, for failure messages.
func (sc *systemdContainer) journal(unit string) string {
	out, err := hostCommand(context.Background(), "/", sc.pid, true, []string{"journalctl", "--no-pager", "-n", "60", "-u", unit}).CombinedOutput()
	return fmt.Sprintf("journalctl -u %s: %v\n%s", unit, err, out)
}

// mainPID is a unit's main process in the container's PID namespace.
func (sc *systemdContainer) mainPID(t *testing.T, unit string) string {
	t.Helper()
	out, err := hostCommand(context.Background(), "/", sc.pid, true, []string{"systemctl", "show", "-P", "MainPID", unit}).CombinedOutput()
	if err != nil {
		t.Fatalf("systemctl show %s: %v: %s", unit, err, out)
	}
	return strings.TrimSpace(string(out))
}

// containerdDropIn runs Debian's containerd.service with the test's
// configuration, without the limits root here may not raise.
const containerdDropIn = `[Service]
ExecStart=
ExecStart=/usr/bin/containerd --config /run/ctrd/config.toml
OOMScoreAdjust=0
LimitNPROC=
LimitCORE=
LimitNOFILE=
`

// ctrdConfig is containerd's configuration with runc's runtime and more
// runc runtimes named handlers.
func ctrdConfig(handlers ...string) string {
	var b strings.Builder
	b.WriteString("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  restrict_oom_score_adj = true\n")
	for _, h := range append([]string{"runc"}, handlers...) {
		fmt.Fprintf(&b, "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.%q]\n    runtime_type = \"io.containerd.runc.v2\"\n", h)
	}
	return b.String()
}

// TestSystemd: the installer's systemd paths against a real systemd (in
// a container of its own) running Debian's containerd.service:
// SystemdRestarter restarts containerd, which then serves the new
// configuration's runtimes, and a process in its unit beside it (as its
// shims are) survives; SystemdServices installs, keeps, restarts and
// removes a unit, and runs a transient one.
func TestSystemd(t *testing.T) {
	sc := startSystemd(t, map[string]string{"containerd.service.d/cocoon-test.conf": containerdDropIn})
	ctx := context.Background()
	systemctl := Systemctl{PID: sc.pid, Root: "/"}
	cfg := filepath.Join(sc.root, "run/ctrd/config.toml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(ctrdConfig("cocoon-a")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := systemctl.Run(ctx, "start", "containerd.service"); err != nil {
		t.Fatal(err)
	}
	address := filepath.Join(sc.root, "run/containerd/containerd.sock")
	if err := waitServing(ctx, address, []string{"cocoon-a"}); err != nil {
		t.Fatalf("%v\n%s", err, sc.journal("containerd.service"))
	}
	first := sc.mainPID(t, "containerd.service")

	// A shim's stand-in: a process of the container in containerd's unit.
	shim := hostCommand(ctx, "/", sc.pid, true, []string{"/usr/bin/sleep", "1000"})
	if err := shim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shim.Process.Kill(); shim.Wait() })
	var shimPID int
	for deadline := time.Now().Add(10 * time.Second); shimPID == 0; time.Sleep(20 * time.Millisecond) {
		if c := children(shim.Process.Pid); len(c) > 0 {
			shimPID = c[0]
		}
		if time.Now().After(deadline) {
			t.Fatal("the shim's stand-in did not start")
		}
	}
	unitCgroup := filepath.Join(sc.cgroups[slicesIndex(sc.cgroups, "/systemd/")], "system.slice/containerd.service")
	if err := os.WriteFile(filepath.Join(unitCgroup, "cgroup.procs"), []byte(strconv.Itoa(shimPID)), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(cfg, []byte(ctrdConfig("cocoon-a", "cocoon-b")), 0o644); err != nil {
		t.Fatal(err)
	}
	r := SystemdRestarter{Unit: "containerd", Address: address, Systemctl: systemctl}
	if err := r.Restart(ctx, []string{"cocoon-a", "cocoon-b"}); err != nil {
		t.Fatal(err)
	}
	if again := sc.mainPID(t, "containerd.service"); again == first || again == "0" {
		t.Errorf("containerd's main PID %s, before the restart %s", again, first)
	}
	if !alive(shimPID) {
		t.Error("the process beside containerd did not survive its restart (KillMode=process)")
	}
	if procs, _ := os.ReadFile(filepath.Join(unitCgroup, "cgroup.procs")); !strings.Contains("\n"+string(procs), "\n"+strconv.Itoa(shimPID)+"\n") {
		t.Errorf("the process left containerd's unit: %s", procs)
	}
	if err := (SystemdRestarter{Unit: "missing", Address: address, Systemctl: systemctl}).Restart(ctx, nil); err == nil {
		t.Error("restarting a unit that does not exist succeeded")
	}

	svc := SystemdServices{Systemctl: systemctl, UnitDir: "/etc/systemd/system", Containerd: "containerd", Root: sc.root}
	how, err := svc.Ensure(ctx, "cocoon-test", []string{"/usr/bin/sleep", "1001"}, false)
	if err != nil || how != "systemd unit cocoon-test.service" {
		t.Fatalf("Ensure: %q, %v", how, err)
	}
	for _, check := range [][]string{{"is-active", "cocoon-test.service"}, {"is-enabled", "cocoon-test.service"}} {
		if err := systemctl.Run(ctx, check...); err != nil {
			t.Error(err)
		}
	}
	p1 := sc.mainPID(t, "cocoon-test.service")
	if _, err := svc.Ensure(ctx, "cocoon-test", []string{"/usr/bin/sleep", "1001"}, false); err != nil {
		t.Fatal(err)
	}
	if p := sc.mainPID(t, "cocoon-test.service"); p != p1 {
		t.Errorf("Ensure with nothing changed restarted the unit: %s, was %s", p, p1)
	}
	if _, err := svc.Ensure(ctx, "cocoon-test", []string{"/usr/bin/sleep", "1001"}, true); err != nil {
		t.Fatal(err)
	}
	p2 := sc.mainPID(t, "cocoon-test.service")
	if p2 == p1 {
		t.Error("Ensure with restart kept the unit's process")
	}
	if _, err := svc.Ensure(ctx, "cocoon-test", []string{"/usr/bin/sleep", "1002"}, false); err != nil {
		t.Fatal(err)
	}
	if p := sc.mainPID(t, "cocoon-test.service"); p == p2 {
		t.Error("Ensure with new arguments kept the unit's process")
	}
	if err := svc.Detach(ctx, "cocoon-test-once", []string{"/usr/bin/sleep", "1003"}); err != nil {
		t.Fatal(err)
	}
	if err := systemctl.Run(ctx, "is-active", "cocoon-test-once.service"); err != nil {
		t.Error(err)
	}
	if err := svc.Stop(ctx, "cocoon-test"); err != nil {
		t.Fatal(err)
	}
	if fileExists(svc.unitPath("cocoon-test")) {
		t.Error("the unit file is left")
	}
	if err := systemctl.Run(ctx, "is-active", "cocoon-test.service"); err == nil {
		t.Error("the unit still runs")
	}
	if err := svc.Stop(ctx, "cocoon-test"); err != nil {
		t.Errorf("Stop of a removed unit: %v", err)
	}
}

// slicesIndex is the index of the first of dirs containing part.
func slicesIndex(dirs []string, part string) int {
	for i, d := range dirs {
		if strings.Contains(d, part) {
			return i
		}
	}
	return 0
}

// TestInstallSystemd: Install and Uninstall on a node whose containerd is
// Debian's systemd unit (in a systemd container): cocoon-snapshotter runs
// as a unit wanted by containerd's before containerd restarts to use it,
// containerd's CRI then unpacks with it; Uninstall gives back containerd's
// configuration byte for byte and leaves no unit, snapshot or file.
func TestInstallSystemd(t *testing.T) {
	sc := startSystemd(t, map[string]string{"containerd.service.d/cocoon-test.conf": containerdDropIn})
	ctx := context.Background()
	systemctl := Systemctl{PID: sc.pid, Root: "/"}
	original := []byte(ctrdConfig())
	cfg := filepath.Join(sc.root, "run/ctrd/config.toml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, original, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := systemctl.Run(ctx, "start", "containerd.service"); err != nil {
		t.Fatal(err)
	}
	address := filepath.Join(sc.root, "run/containerd/containerd.sock")
	if err := waitServing(ctx, address, nil); err != nil {
		t.Fatalf("%v\n%s", err, sc.journal("containerd.service"))
	}
	reg := imagetest.StartRegistry(t)
	guest := imagetest.New(t, ocispec.ImageConfig{}, imagetest.GzipLayer(t,
		imagetest.File(GuestKernel, "kernel\n", 0o644), imagetest.File(GuestInitrd, "initrd\n", 0o644)))
	reg.Push(t, guest, "guest:1", nil)
	o := Options{
		InstallDir: "/opt/cocoon",
		SourceDir:  filepath.Dir(testutil.Bin(t, snapshotterBin)),
		Flavours:   []string{"qemu"},
		Guest:      reg.Host + "/guest@" + digest.FromBytes(guest.Manifest).String(),
		PlainHTTP:  true,
		Containerd: Containerd{ConfigPath: "/run/ctrd/config.toml", DropInDir: "/run/ctrd/conf.d",
			Address: "/run/containerd/containerd.sock", Root: sc.root},
		Restarter:   SystemdRestarter{Unit: "containerd", Address: address, Systemctl: systemctl},
		Snapshotter: &Snapshotter{Images: "^registry\\.example/confidential/", Address: "/run/cocoon-snapshotter/snapshotter.sock"},
		Services:    SystemdServices{Systemctl: systemctl, UnitDir: "/etc/systemd/system", Containerd: "containerd", Root: sc.root},
	}
	res, err := Install(ctx, o)
	if err != nil {
		t.Fatalf("Install: %v\n%s\n%s", err, sc.journal("cocoon-snapshotter.service"), sc.journal("containerd.service"))
	}
	if res.Snapshotter != "systemd unit cocoon-snapshotter.service" || !res.Restarted {
		t.Errorf("Install: %+v", res)
	}
	for _, check := range [][]string{{"is-active", "cocoon-snapshotter.service"}, {"is-enabled", "cocoon-snapshotter.service"}} {
		if err := systemctl.Run(ctx, check...); err != nil {
			t.Error(err)
		}
	}
	if snapshotter := criSnapshotter(t, address); snapshotter != SnapshotterName {
		t.Errorf("containerd's CRI snapshotter: %q", snapshotter)
	}
	root := filepath.Join(sc.root, "var/lib/containerd/io.containerd.snapshotter.v1.cocoon")
	if !fileExists(root) {
		t.Errorf("no snapshots directory %s", root)
	}

	if err := Uninstall(ctx, o); err != nil {
		t.Fatalf("Uninstall: %v", err)
	}
	if b, _ := os.ReadFile(cfg); string(b) != string(original) {
		t.Errorf("containerd's configuration not restored:\n%s", b)
	}
	if snapshotter := criSnapshotter(t, address); snapshotter == SnapshotterName {
		t.Error("containerd still unpacks with cocoon-snapshotter")
	}
	if err := systemctl.Run(ctx, "is-active", "cocoon-snapshotter.service"); err == nil {
		t.Error("cocoon-snapshotter still runs")
	}
	for _, p := range []string{root, filepath.Join(sc.root, "opt/cocoon"), filepath.Join(sc.root, "run/ctrd/conf.d"),
		filepath.Join(sc.root, "etc/systemd/system/cocoon-snapshotter.service")} {
		if fileExists(p) {
			t.Errorf("%s left", p)
		}
	}
}

// criSnapshotter is the snapshotter containerd's CRI unpacks images with.
func criSnapshotter(t *testing.T, address string) string {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := cri.NewRuntimeServiceClient(conn).Status(context.Background(), &cri.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Containerd struct {
			Snapshotter string `json:"snapshotter"`
		} `json:"containerd"`
	}
	if err := json.Unmarshal([]byte(st.GetInfo()["config"]), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Containerd.Snapshotter
}
