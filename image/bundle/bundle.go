// Package bundle writes an OCI runtime bundle's config.json from an image
// config: process args, environment, working directory and user, with the
// default mounts and namespaces of a plain Linux container.
package bundle

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// RootfsDir is the bundle's root filesystem directory.
const RootfsDir = "rootfs"

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ErrUser: the image's user cannot be resolved in its rootfs.
var ErrUser = errors.New("cannot resolve image user")

// Write writes dir/config.json for the image config img, resolving user
// names in dir/rootfs.
func Write(dir string, img ocispec.Image) error {
	s, err := Spec(filepath.Join(dir, RootfsDir), img)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600)
}

// Spec builds the runtime spec of img over rootfs.
func Spec(rootfs string, img ocispec.Image) (*specs.Spec, error) {
	c := img.Config
	user, err := resolveUser(rootfs, c.User)
	if err != nil {
		return nil, err
	}
	env := c.Env
	if !hasPath(env) {
		env = append([]string{defaultPath}, env...)
	}
	cwd := c.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: RootfsDir},
		Process: &specs.Process{
			Args: append(append([]string{}, c.Entrypoint...), c.Cmd...),
			Env:  env, Cwd: cwd, User: user,
			Capabilities:    defaultCaps(),
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Mounts: defaultMounts(),
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace},
				{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.MountNamespace}},
			MaskedPaths:   []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}, nil
}

func hasPath(env []string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			return true
		}
	}
	return false
}

func defaultCaps() *specs.LinuxCapabilities {
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
		"CAP_KILL", "CAP_AUDIT_WRITE"}
	return &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
}

func defaultMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
}

// resolveUser maps "user[:group]" (names or numbers) to ids, reading the
// image's /etc/passwd and /etc/group confined to rootfs.
func resolveUser(rootfs, s string) (specs.User, error) {
	if s == "" {
		return specs.User{}, nil
	}
	userPart, groupPart, hasGroup := strings.Cut(s, ":")
	uid, gid, err := lookup(rootfs, "etc/passwd", userPart)
	if err != nil {
		return specs.User{}, err
	}
	if hasGroup {
		if gid, _, err = lookup(rootfs, "etc/group", groupPart); err != nil {
			return specs.User{}, err
		}
	}
	return specs.User{UID: uid, GID: gid}, nil
}

// lookup finds name (or a number) in a passwd-format file: the third field
// is the id, the fourth (passwd only) the primary group.
func lookup(rootfs, file, name string) (id, gid uint32, err error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		id = uint32(n)
	}
	p, err := securejoin.SecureJoin(rootfs, file)
	if err != nil {
		return 0, 0, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) && isNumber(name) {
		return id, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w %q: %w", ErrUser, name, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 3 || (fields[0] != name && fields[2] != name) {
			continue
		}
		n, err := strconv.ParseUint(fields[2], 10, 32)
		if err != nil {
			continue
		}
		if len(fields) > 3 {
			if g, err := strconv.ParseUint(fields[3], 10, 32); err == nil {
				gid = uint32(g)
			}
		}
		return uint32(n), gid, nil
	}
	if isNumber(name) {
		return id, 0, nil
	}
	return 0, 0, fmt.Errorf("%w: %q not in /%s", ErrUser, name, file)
}

func isNumber(s string) bool {
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}
