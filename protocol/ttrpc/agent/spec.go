package agent

import (
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// This file maps the OCI runtime spec to the agent's protobuf Spec and
// back: the shim sends a bundle's config.json as a Spec, the agent runs it.
// Some fields are not converted: hooks on purpose, since the guest never
// runs host-chosen hooks; the block I/O, network class and Intel RDT
// settings, which Kata's runtime never sends either; and the deprecated
// kernel memory limit.

// SpecFromOCI converts an OCI runtime spec to the agent's Spec.
func SpecFromOCI(s *specs.Spec) *Spec {
	if s == nil {
		return nil
	}
	out := &Spec{Version: s.Version, Hostname: s.Hostname, Annotations: s.Annotations,
		Process: processFromOCI(s.Process), Linux: linuxFromOCI(s.Linux)}
	if s.Root != nil {
		out.Root = &Root{Path: s.Root.Path, Readonly: s.Root.Readonly}
	}
	for _, m := range s.Mounts {
		out.Mounts = append(out.Mounts, &Mount{Destination: m.Destination, Source: m.Source, Type: m.Type, Options: m.Options})
	}
	return out
}

// OCI converts the Spec back to an OCI runtime spec.
func (s *Spec) OCI() *specs.Spec {
	if s == nil {
		return nil
	}
	out := &specs.Spec{Version: s.Version, Hostname: s.Hostname, Annotations: s.Annotations,
		Process: s.Process.OCI(), Linux: s.Linux.oci()}
	if s.Root != nil {
		out.Root = &specs.Root{Path: s.Root.Path, Readonly: s.Root.Readonly}
	}
	for _, m := range s.Mounts {
		out.Mounts = append(out.Mounts, specs.Mount{Destination: m.Destination, Source: m.Source, Type: m.Type, Options: m.Options})
	}
	return out
}

func processFromOCI(p *specs.Process) *Process {
	if p == nil {
		return nil
	}
	out := &Process{Terminal: p.Terminal, Args: p.Args, Env: p.Env, Cwd: p.Cwd, NoNewPrivileges: p.NoNewPrivileges,
		ApparmorProfile: p.ApparmorProfile, SelinuxLabel: p.SelinuxLabel,
		User: &User{UID: p.User.UID, GID: p.User.GID, AdditionalGids: p.User.AdditionalGids, Username: p.User.Username}}
	if p.OOMScoreAdj != nil {
		out.OOMScoreAdj = int64(*p.OOMScoreAdj)
	}
	if p.ConsoleSize != nil {
		out.ConsoleSize = &Box{Height: uint32(p.ConsoleSize.Height), Width: uint32(p.ConsoleSize.Width)}
	}
	if c := p.Capabilities; c != nil {
		out.Capabilities = &LinuxCapabilities{Bounding: c.Bounding, Effective: c.Effective, Inheritable: c.Inheritable,
			Permitted: c.Permitted, Ambient: c.Ambient}
	}
	for _, r := range p.Rlimits {
		out.Rlimits = append(out.Rlimits, &POSIXRlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
	}
	return out
}

// OCI converts the Process to an OCI process (also used for exec).
func (p *Process) OCI() *specs.Process {
	if p == nil {
		return nil
	}
	out := &specs.Process{Terminal: p.Terminal, Args: p.Args, Env: p.Env, Cwd: p.Cwd, NoNewPrivileges: p.NoNewPrivileges,
		ApparmorProfile: p.ApparmorProfile, SelinuxLabel: p.SelinuxLabel}
	if u := p.User; u != nil {
		out.User = specs.User{UID: u.UID, GID: u.GID, AdditionalGids: u.AdditionalGids, Username: u.Username}
	}
	if p.OOMScoreAdj != 0 {
		adj := int(p.OOMScoreAdj)
		out.OOMScoreAdj = &adj
	}
	if b := p.ConsoleSize; b != nil {
		out.ConsoleSize = &specs.Box{Height: uint(b.Height), Width: uint(b.Width)}
	}
	if c := p.Capabilities; c != nil {
		out.Capabilities = &specs.LinuxCapabilities{Bounding: c.Bounding, Effective: c.Effective, Inheritable: c.Inheritable,
			Permitted: c.Permitted, Ambient: c.Ambient}
	}
	for _, r := range p.Rlimits {
		out.Rlimits = append(out.Rlimits, specs.POSIXRlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
	}
	return out
}

func linuxFromOCI(l *specs.Linux) *Linux {
	if l == nil {
		return nil
	}
	out := &Linux{Sysctl: l.Sysctl, CgroupsPath: l.CgroupsPath, RootfsPropagation: l.RootfsPropagation,
		MaskedPaths: l.MaskedPaths, ReadonlyPaths: l.ReadonlyPaths, MountLabel: l.MountLabel,
		UIDMappings: idMapsFromOCI(l.UIDMappings), GIDMappings: idMapsFromOCI(l.GIDMappings),
		Resources: resourcesFromOCI(l.Resources), Seccomp: seccompFromOCI(l.Seccomp)}
	for _, n := range l.Namespaces {
		out.Namespaces = append(out.Namespaces, &LinuxNamespace{Type: string(n.Type), Path: n.Path})
	}
	for _, d := range l.Devices {
		dev := &LinuxDevice{Path: d.Path, Type: d.Type, Major: d.Major, Minor: d.Minor}
		if d.FileMode != nil {
			dev.FileMode = uint32(*d.FileMode)
		}
		if d.UID != nil {
			dev.UID = *d.UID
		}
		if d.GID != nil {
			dev.GID = *d.GID
		}
		out.Devices = append(out.Devices, dev)
	}
	return out
}

func (l *Linux) oci() *specs.Linux {
	if l == nil {
		return nil
	}
	out := &specs.Linux{Sysctl: l.Sysctl, CgroupsPath: l.CgroupsPath, RootfsPropagation: l.RootfsPropagation,
		MaskedPaths: l.MaskedPaths, ReadonlyPaths: l.ReadonlyPaths, MountLabel: l.MountLabel,
		UIDMappings: idMapsOCI(l.UIDMappings), GIDMappings: idMapsOCI(l.GIDMappings),
		Resources: l.Resources.OCI(), Seccomp: l.Seccomp.oci()}
	for _, n := range l.Namespaces {
		out.Namespaces = append(out.Namespaces, specs.LinuxNamespace{Type: specs.LinuxNamespaceType(n.Type), Path: n.Path})
	}
	for _, d := range l.Devices {
		mode, uid, gid := fileMode(d.FileMode), d.UID, d.GID
		out.Devices = append(out.Devices, specs.LinuxDevice{Path: d.Path, Type: d.Type, Major: d.Major, Minor: d.Minor,
			FileMode: &mode, UID: &uid, GID: &gid})
	}
	return out
}

func idMapsFromOCI(m []specs.LinuxIDMapping) []*LinuxIDMapping {
	var out []*LinuxIDMapping
	for _, e := range m {
		out = append(out, &LinuxIDMapping{HostID: e.HostID, ContainerID: e.ContainerID, Size: e.Size})
	}
	return out
}

func idMapsOCI(m []*LinuxIDMapping) []specs.LinuxIDMapping {
	var out []specs.LinuxIDMapping
	for _, e := range m {
		out = append(out, specs.LinuxIDMapping{HostID: e.HostID, ContainerID: e.ContainerID, Size: e.Size})
	}
	return out
}

func resourcesFromOCI(r *specs.LinuxResources) *LinuxResources {
	if r == nil {
		return nil
	}
	out := &LinuxResources{}
	for _, d := range r.Devices {
		c := &LinuxDeviceCgroup{Allow: d.Allow, Type: d.Type, Access: d.Access}
		if d.Major != nil {
			c.Major = *d.Major
		} else {
			c.Major = -1
		}
		if d.Minor != nil {
			c.Minor = *d.Minor
		} else {
			c.Minor = -1
		}
		out.Devices = append(out.Devices, c)
	}
	if m := r.Memory; m != nil {
		out.Memory = &LinuxMemory{Limit: deref(m.Limit), Reservation: deref(m.Reservation), Swap: deref(m.Swap),
			KernelTCP: deref(m.KernelTCP), Swappiness: deref(m.Swappiness),
			DisableOOMKiller: deref(m.DisableOOMKiller)}
	}
	if c := r.CPU; c != nil {
		out.CPU = &LinuxCPU{Shares: deref(c.Shares), Quota: deref(c.Quota), Period: deref(c.Period),
			RealtimeRuntime: deref(c.RealtimeRuntime), RealtimePeriod: deref(c.RealtimePeriod), Cpus: c.Cpus, Mems: c.Mems}
	}
	if r.Pids != nil && r.Pids.Limit != nil {
		out.Pids = &LinuxPids{Limit: *r.Pids.Limit}
	}
	for _, h := range r.HugepageLimits {
		out.HugepageLimits = append(out.HugepageLimits, &LinuxHugepageLimit{Pagesize: h.Pagesize, Limit: h.Limit})
	}
	return out
}

func (r *LinuxResources) OCI() *specs.LinuxResources {
	if r == nil {
		return nil
	}
	out := &specs.LinuxResources{}
	for _, d := range r.Devices {
		c := specs.LinuxDeviceCgroup{Allow: d.Allow, Type: d.Type, Access: d.Access}
		if d.Major >= 0 {
			c.Major = ptr(d.Major)
		}
		if d.Minor >= 0 {
			c.Minor = ptr(d.Minor)
		}
		out.Devices = append(out.Devices, c)
	}
	if m := r.Memory; m != nil {
		out.Memory = &specs.LinuxMemory{Limit: nonZero(m.Limit), Reservation: nonZero(m.Reservation), Swap: nonZero(m.Swap),
			KernelTCP: nonZero(m.KernelTCP), Swappiness: nonZero(m.Swappiness),
			DisableOOMKiller: nonZero(m.DisableOOMKiller)}
	}
	if c := r.CPU; c != nil {
		out.CPU = &specs.LinuxCPU{Shares: nonZero(c.Shares), Quota: nonZero(c.Quota), Period: nonZero(c.Period),
			RealtimeRuntime: nonZero(c.RealtimeRuntime), RealtimePeriod: nonZero(c.RealtimePeriod), Cpus: c.Cpus, Mems: c.Mems}
	}
	if r.Pids != nil {
		out.Pids = &specs.LinuxPids{Limit: ptr(r.Pids.Limit)}
	}
	for _, h := range r.HugepageLimits {
		out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.Pagesize, Limit: h.Limit})
	}
	return out
}

func seccompFromOCI(s *specs.LinuxSeccomp) *LinuxSeccomp {
	if s == nil {
		return nil
	}
	out := &LinuxSeccomp{DefaultAction: string(s.DefaultAction)}
	for _, a := range s.Architectures {
		out.Architectures = append(out.Architectures, string(a))
	}
	for _, f := range s.Flags {
		out.Flags = append(out.Flags, string(f))
	}
	for _, sc := range s.Syscalls {
		call := &LinuxSyscall{Names: sc.Names, Action: string(sc.Action)}
		if sc.ErrnoRet != nil {
			call.ErrnoRet = &LinuxSyscall_Errnoret{Errnoret: uint32(*sc.ErrnoRet)}
		}
		for _, a := range sc.Args {
			call.Args = append(call.Args, &LinuxSeccompArg{Index: uint64(a.Index), Value: a.Value, ValueTwo: a.ValueTwo, Op: string(a.Op)})
		}
		out.Syscalls = append(out.Syscalls, call)
	}
	return out
}

func (s *LinuxSeccomp) oci() *specs.LinuxSeccomp {
	if s == nil {
		return nil
	}
	out := &specs.LinuxSeccomp{DefaultAction: specs.LinuxSeccompAction(s.DefaultAction)}
	for _, a := range s.Architectures {
		out.Architectures = append(out.Architectures, specs.Arch(a))
	}
	for _, f := range s.Flags {
		out.Flags = append(out.Flags, specs.LinuxSeccompFlag(f))
	}
	for _, sc := range s.Syscalls {
		call := specs.LinuxSyscall{Names: sc.Names, Action: specs.LinuxSeccompAction(sc.Action)}
		if e, ok := sc.ErrnoRet.(*LinuxSyscall_Errnoret); ok {
			call.ErrnoRet = ptr(uint(e.Errnoret))
		}
		for _, a := range sc.Args {
			call.Args = append(call.Args, specs.LinuxSeccompArg{Index: uint(a.Index), Value: a.Value, ValueTwo: a.ValueTwo,
				Op: specs.LinuxSeccompOperator(a.Op)})
		}
		out.Syscalls = append(out.Syscalls, call)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// nonZero maps protobuf's "unset" zero value back to an absent OCI field.
func nonZero[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

func fileMode(m uint32) os.FileMode { return os.FileMode(m) }
