package shim

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/cgroups/systemd"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The pod's sandbox (QEMU and the shim itself, as Kata's
// sandbox_cgroup_only) runs in the host cgroup the sandbox spec's
// linux.cgroupsPath names: the kubelet's pod cgroup and the sandbox's id
// (/kubepods/burstable/pod<uid>/<id> with the cgroupfs driver,
// kubepods-burstable-pod<uid>.slice:cri-containerd:<id> with systemd's), so
// the node accounts for the VM's memory and CPU in the pod, where its
// RuntimeClass overhead is reserved, and its limits bind the VM.

// ErrCgroupsPath is wrapped by the errors of a cgroupsPath that cannot name
// a cgroup.
var ErrCgroupsPath = errors.New("invalid cgroupsPath")

// parseCgroupsPath reads an OCI cgroupsPath: a path (cgroupfs), or
// slice:prefix:name (systemd), which becomes a systemd scope when systemd
// runs and the same place in the hierarchy written as a path otherwise.
func parseCgroupsPath(p string) (cg *cgroups.Cgroup, inner string, err error) {
	if strings.ContainsRune(p, 0) {
		return nil, "", fmt.Errorf("%w: %q", ErrCgroupsPath, p)
	}
	cg = &cgroups.Cgroup{Resources: &cgroups.Resources{SkipDevices: true}}
	if parts := strings.Split(p, ":"); len(parts) == 3 {
		slice, prefix, name := parts[0], parts[1], parts[2]
		if name == "" || strings.ContainsRune(prefix+name, '/') || !strings.HasSuffix(slice, ".slice") && slice != "" {
			return nil, "", fmt.Errorf("%w: %q (want slice:prefix:name)", ErrCgroupsPath, p)
		}
		dir := "/"
		if slice != "" {
			if dir, err = systemd.ExpandSlice(slice); err != nil {
				return nil, "", fmt.Errorf("%w: %q: %v", ErrCgroupsPath, p, err)
			}
		}
		scope := name + ".scope"
		if prefix != "" {
			scope = prefix + "-" + scope
		}
		inner = path.Join(dir, scope)
		if systemd.IsRunningSystemd() {
			cg.Systemd, cg.Parent, cg.ScopePrefix, cg.Name = true, slice, prefix, name
		} else {
			cg.Path = inner
		}
		return cg, inner, nil
	}
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		// Relative paths would land under the shim's own cgroup.
		return nil, "", fmt.Errorf("%w: %q (want a clean absolute path)", ErrCgroupsPath, p)
	}
	cg.Path = p
	return cg, p, nil
}

// podCgroup is the host cgroup the shim joined, and the cgroups it left.
type podCgroup struct {
	m     cgroups.Manager
	inner string            // the pod cgroup's path in every hierarchy
	own   map[string]string // hierarchy (a v1 controller, "" for v2) → the shim's former cgroup in it
}

// joinPodCgroup creates the cgroup the sandbox spec's cgroupsPath names and
// moves the shim into it: every process the shim starts from then on (QEMU,
// the local agent) starts there. Without a cgroupsPath it does nothing.
func joinPodCgroup(l *specs.Linux) (*podCgroup, error) {
	if l == nil || l.CgroupsPath == "" {
		return nil, nil
	}
	cgroupsPath := l.CgroupsPath
	cg, inner, err := parseCgroupsPath(cgroupsPath)
	if err != nil {
		return nil, err
	}
	own, err := cgroups.ParseCgroupFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	m, err := manager.New(cg)
	if err != nil {
		return nil, fmt.Errorf("pod cgroup %s: %w", cgroupsPath, err)
	}
	if err := m.Apply(os.Getpid()); err != nil {
		m.Destroy()
		return nil, fmt.Errorf("join the pod cgroup %s: %w", cgroupsPath, err)
	}
	return &podCgroup{m: m, inner: inner, own: own}, nil
}

// leave moves the shim back where it was and removes the pod's cgroup:
// the sandbox has ended, so nothing else is left in it.
func (c *podCgroup) leave() error {
	if c == nil {
		return nil
	}
	pid := os.Getpid()
	for sub, dir := range c.m.GetPaths() {
		own, ok := c.own[sub]
		mount, inner := strings.CutSuffix(dir, c.inner)
		if !ok || !inner {
			continue
		}
		if err := cgroups.WriteCgroupProc(filepath.Join(mount, own), pid); err != nil {
			return fmt.Errorf("leave the pod cgroup: %w", err)
		}
	}
	return c.m.Destroy()
}

// removePodCgroup removes a dead shim's pod cgroup (Cleanup): its
// processes died with the shim.
func removePodCgroup(l *specs.Linux) error {
	if l == nil || l.CgroupsPath == "" {
		return nil
	}
	cg, _, err := parseCgroupsPath(l.CgroupsPath)
	if err != nil {
		return err
	}
	m, err := manager.New(cg)
	if err != nil {
		return err
	}
	if !m.Exists() {
		return nil
	}
	return m.Destroy()
}
