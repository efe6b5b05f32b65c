package generate

import (
	"fmt"
	"path"
	"regexp"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// The mounts containerd gives every container (CRI's defaults).
func defaultMounts(privileged bool) []Mount {
	sys := []string{"nodev", "noexec", "nosuid", "ro"}
	cgroup := []string{"nodev", "noexec", "nosuid", "relatime", "ro"}
	if privileged {
		sys = []string{"nodev", "noexec", "nosuid", "rw"}
		cgroup = []string{"nodev", "noexec", "nosuid", "relatime", "rw"}
	}
	return []Mount{
		{Destination: "/proc", Type: "proc", Source: "^proc$", Options: []string{"nodev", "noexec", "nosuid"}},
		{Destination: "/dev", Type: "tmpfs", Source: "^tmpfs$", Options: []string{"mode=755", "nosuid", "size=65536k", "strictatime"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "^devpts$", Options: []string{"gid=5", "mode=0620", "newinstance", "noexec", "nosuid", "ptmxmode=0666"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "^mqueue$", Options: []string{"nodev", "noexec", "nosuid"}},
		{Destination: "/sys", Type: "sysfs", Source: "^sysfs$", Options: sys},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "^cgroup$", Options: cgroup},
	}
}

// bind is a bind mount's options: rbind, the propagation, ro or rw.
func bind(readOnly bool, prop *corev1.MountPropagationMode) []string {
	o := []string{"rbind", "rprivate", "rw"}
	if readOnly {
		o[2] = "ro"
	}
	if prop != nil {
		switch *prop {
		case corev1.MountPropagationHostToContainer:
			o[1] = "rslave"
		case corev1.MountPropagationBidirectional:
			o[1] = "rshared"
		}
	}
	slices.Sort(o)
	return o
}

// volumeName is what the kubelet names a volume's directory.
var volumeName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// mounts are the container's mounts and the guest storages they name: the
// kubelet's files (copied into the guest by the shim), the pod's volumes.
func (b *builder) mounts(c *corev1.Container, pc *Container) error {
	pc.Mounts = defaultMounts(pc.Privileged)
	// Files CRI mounts from the host, copied in; /etc/hostname and
	// /etc/resolv.conf are read-only with a read-only root.
	pc.Mounts = append(pc.Mounts,
		Mount{Destination: "/etc/hosts", Type: "bind", Source: copyPrefix + "etc-hosts$", Options: bind(false, nil)},
		Mount{Destination: "/etc/hostname", Type: "bind", Source: copyPrefix + "hostname$", Options: bind(pc.ReadonlyRoot, nil)},
		Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: copyPrefix + "resolv.conf$", Options: bind(pc.ReadonlyRoot, nil)},
		Mount{Destination: "/dev/shm", Type: "bind", Source: "^" + ephemeralDir + "/shm$", Options: bind(false, nil)},
	)
	pc.Storages = []Storage{
		{Driver: "image_guest_pull", Source: pc.Image, Fstype: "overlay", MountPoint: "/run/kata-containers/" + bundleID + "/rootfs", Options: "^$"},
		{Driver: "ephemeral", Source: "tmpfs", Fstype: "tmpfs", MountPoint: ephemeralDir + "/shm", Options: `^size=[0-9]+[kmg]?$`},
	}
	// The kubelet's termination-message file has a random 8-hex-digit name.
	termination := c.TerminationMessagePath
	if termination == "" {
		termination = corev1.TerminationMessagePathDefault
	}
	pc.Mounts = append(pc.Mounts, Mount{Destination: termination, Type: "bind", Source: copyPrefix + "[0-9a-f]{8}$", Options: bind(false, nil)})
	if b.spec.AutomountServiceAccountToken == nil || *b.spec.AutomountServiceAccountToken {
		// The token's projected volume; the ServiceAccount may turn it off.
		pc.Mounts = append(pc.Mounts, Mount{Destination: "/var/run/secrets/kubernetes.io/serviceaccount", Type: "bind",
			Source: copyPrefix + "kube-api-access-[a-z0-9]{5}$", Options: bind(true, nil), Optional: true})
	}
	// The kubelet adds none of these where the pod mounts a volume.
	pc.Mounts = slices.DeleteFunc(pc.Mounts, func(m Mount) bool {
		return m.Type == "bind" && slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return path.Clean(vm.MountPath) == m.Destination })
	})
	volumes := map[string]*corev1.Volume{}
	for i := range b.spec.Volumes {
		volumes[b.spec.Volumes[i].Name] = &b.spec.Volumes[i]
	}
	fsGroup := (*int64)(nil)
	if b.spec.SecurityContext != nil {
		fsGroup = b.spec.SecurityContext.FSGroup
	}
	for _, vm := range c.VolumeMounts {
		v, ok := volumes[vm.Name]
		if !ok {
			return fmt.Errorf("%w: volume mount %s names no volume of the pod", ErrManifest, vm.Name)
		}
		if !volumeName.MatchString(v.Name) {
			return fmt.Errorf("%w: volume name %q", ErrManifest, v.Name)
		}
		if vm.SubPathExpr != "" {
			return fmt.Errorf("%w: volume mount %s: subPathExpr is not supported", ErrManifest, vm.Name)
		}
		m := Mount{Destination: path.Clean(vm.MountPath), Type: "bind", Options: bind(vm.ReadOnly, vm.MountPropagation)}
		vs := v.VolumeSource
		switch {
		case vs.ConfigMap != nil || vs.Secret != nil || vs.DownwardAPI != nil || vs.Projected != nil:
			// The kubelet mounts API data read-only.
			m.Options = bind(true, vm.MountPropagation)
			m.Source = copyPrefix + regexp.QuoteMeta(v.Name) + "$"
			if vm.SubPath != "" {
				// A subPath's host file is named by the mount's index.
				m.Source = copyPrefix + "[0-9]+$"
			}
		case vs.EmptyDir != nil:
			if vm.SubPath != "" {
				return fmt.Errorf("%w: volume mount %s: a subPath of an emptyDir is not supported in the guest", ErrManifest, vm.Name)
			}
			s := Storage{Driver: "local", Source: "local", Fstype: "local", MountPoint: localDir + "/" + v.Name, Options: `^mode=0777$`, FSGroup: fsGroup}
			if vs.EmptyDir.Medium == corev1.StorageMediumMemory {
				s = Storage{Driver: "ephemeral", Source: "tmpfs", Fstype: "tmpfs", MountPoint: ephemeralDir + "/" + v.Name, Options: `^size=[0-9]+[kmg]?$`, FSGroup: fsGroup}
			}
			m.Source = "^" + regexp.QuoteMeta(s.MountPoint) + "$"
			pc.Storages = append(pc.Storages, s)
			if vs.EmptyDir.Medium != corev1.StorageMediumMemory {
				// A VM pod's is a scratch disk encrypted in the guest,
				// mounted at the base64url of its PCI path
				// (runtime/shim/disks.go); rules.rego checks the rest.
				m.Source = "^" + regexp.QuoteMeta(localDir) + "/(" + regexp.QuoteMeta(v.Name) + "|[A-Za-z0-9_-]+=*)$"
				if d := (Storage{Driver: "blk", Fstype: "ext4", MountPoint: localDir, Options: "^$", FSGroup: fsGroup}); !slices.Contains(pc.Storages, d) {
					pc.Storages = append(pc.Storages, d)
				}
			}
		case vs.HostPath != nil:
			// The guest gives it an empty directory of its own.
			m.Source = "^" + regexp.QuoteMeta(path.Clean(vs.HostPath.Path)) + "$"
			if vm.SubPath != "" {
				return fmt.Errorf("%w: volume mount %s: a subPath of a hostPath is not supported in the guest", ErrManifest, vm.Name)
			}
		default:
			return fmt.Errorf("%w: volume %s: only configMap, secret, downwardAPI, projected, emptyDir and hostPath volumes reach a confidential pod", ErrManifest, v.Name)
		}
		pc.Mounts = append(pc.Mounts, m)
	}
	// A destination once: a second mount there would hide the first.
	seen := map[string]bool{}
	for _, m := range pc.Mounts {
		if seen[m.Destination] {
			return fmt.Errorf("%w: two mounts at %s", ErrManifest, m.Destination)
		}
		seen[m.Destination] = true
	}
	return nil
}
