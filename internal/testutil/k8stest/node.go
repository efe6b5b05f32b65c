package k8stest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/cocoon-cc/cocoon/internal/testutil/containerdtest"
)

// maxSlots bounds the clusters on one machine at a time: go test runs the
// packages of ./... in parallel, each test binary with its own cluster.
const maxSlots = 16

// slot is one cluster's share of the machine: a network namespace for the
// node, the addresses and the cgroup and directory names, all derived from
// its number and held with a lock file (released when the process dies, so
// a crashed run's leftovers are removed by the next holder).
type slot struct {
	n    int
	lock *os.File

	Netns       string // network namespace name; /run/netns/<Netns>
	hostIf      string // the host's end of the veth pair
	HostIP      string // the host's address on the veth pair
	NodeIP      string // the node's address (in Netns)
	PodCIDR     string
	ServiceCIDR string
	ServiceIP   string // the kubernetes Service's address
	Cgroup      string // the kubelet's cgroup root
	Dir         string // the cluster's files
}

const slotRoot = "/run/cocoon-k8s"

func acquireSlot() (*slot, error) {
	if err := os.MkdirAll(slotRoot, 0o700); err != nil {
		return nil, err
	}
	for n := range maxSlots {
		f, err := os.OpenFile(filepath.Join(slotRoot, fmt.Sprintf("%d.lock", n)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		return &slot{
			n: n, lock: f,
			Netns:       fmt.Sprintf("cocoon-k8s-%d", n),
			hostIf:      fmt.Sprintf("ck8s%d", n),
			HostIP:      fmt.Sprintf("172.31.254.%d", 4*n+1),
			NodeIP:      fmt.Sprintf("172.31.254.%d", 4*n+2),
			PodCIDR:     fmt.Sprintf("10.244.%d.0/24", n),
			ServiceCIDR: fmt.Sprintf("10.96.%d.0/24", n),
			ServiceIP:   fmt.Sprintf("10.96.%d.1", n),
			Cgroup:      fmt.Sprintf("/cocoon-k8s-%d", n),
			Dir:         filepath.Join(slotRoot, strconv.Itoa(n)),
		}, nil
	}
	return nil, fmt.Errorf("all %d cluster slots of this machine are in use", maxSlots)
}

// NetnsPath is the node's network namespace, for nsenter --net.
func (s *slot) NetnsPath() string { return "/run/netns/" + s.Netns }

// setUp removes what a crashed holder left, then makes the node's network
// namespace, joined to the host by a veth pair (the kubelet refuses a
// loopback node address), and routes the pod and service ranges to it.
func (s *slot) setUp() error {
	s.tearDown()
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	// Where br_netfilter is a module: its sysctl below needs it.
	exec.Command("modprobe", "br_netfilter").Run()
	steps := [][]string{
		{"ip", "netns", "add", s.Netns},
		{"ip", "link", "add", s.hostIf, "type", "veth", "peer", "name", "node0", "netns", s.Netns},
		{"ip", "addr", "add", s.HostIP + "/30", "dev", s.hostIf},
		{"ip", "link", "set", s.hostIf, "up"},
		{"ip", "-n", s.Netns, "addr", "add", s.NodeIP + "/30", "dev", "node0"},
		{"ip", "-n", s.Netns, "link", "set", "node0", "up"},
		{"ip", "-n", s.Netns, "link", "set", "lo", "up"},
		{"ip", "route", "add", s.PodCIDR, "via", s.NodeIP},
		{"ip", "route", "add", s.ServiceCIDR, "via", s.NodeIP},
		// The node forwards between the host and its pods' bridge, and
		// bridged pod traffic goes through kube-proxy's iptables rules.
		{"ip", "netns", "exec", s.Netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
		{"ip", "netns", "exec", s.Netns, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"},
	}
	for _, st := range steps {
		if out, err := exec.Command(st[0], st[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(st, " "), err, out)
		}
	}
	return makeCgroups(s.Cgroup)
}

// makeCgroups makes the kubelet's cgroup root (it must exist) in every
// cgroup v1 hierarchy; cpuset's gets its parent's CPUs and memory nodes.
func makeCgroups(root string) error {
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*/cgroup.procs")
	for _, h := range hierarchies {
		dir := filepath.Join(filepath.Dir(h), root)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(filepath.Dir(h), f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
				}
			}
		}
	}
	return nil
}

// tearDown kills what still runs in the node's network namespace, deletes
// it (and with it the veth pair, its routes and the node's iptables rules),
// the kubelet's cgroups and the cluster's directory. It is idempotent.
func (s *slot) tearDown() error {
	var errs []error
	if out, err := exec.Command("ip", "netns", "pids", s.Netns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if _, err := os.Stat(s.NetnsPath()); err == nil {
		if out, err := exec.Command("ip", "netns", "del", s.Netns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del: %w: %s", err, out))
		}
	}
	exec.Command("ip", "link", "del", s.hostIf).Run() // gone with the namespace, unless that failed
	errs = append(errs, removeCgroups(s.Cgroup))
	containerdtest.UnmountUnder(s.Dir)
	syscall.Unmount(s.Dir, syscall.MNT_DETACH)
	if err := os.RemoveAll(s.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *slot) release() { s.lock.Close() }

// removeCgroups removes the cgroup root in every hierarchy, deepest first
// (a cgroup is removed with rmdir once it has no process and no child).
func removeCgroups(root string) error {
	tops, _ := filepath.Glob("/sys/fs/cgroup/*" + root)
	if top := "/sys/fs/cgroup" + root; exists(top) {
		tops = append(tops, top)
	}
	var dirs []string
	for _, top := range tops {
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var errs []error
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
