package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cocoon-cc/cocoon/guest/cdh/securemount"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// SecureMounter opens encrypted volumes (the confidential data hub's
// SecureMount): a LUKS2 device, formatted first when empty, mounted.
type SecureMounter interface {
	SecureMount(ctx context.Context, r *securemount.Request) error
}

// A disk-backed emptyDir of a VM is a scratch disk the host plugs in, as
// Kata's runtime does with emptydir_mode = "block-encrypted": a "blk"
// storage whose source is the disk's PCI path, mounted at
// LocalPath/<base64url of the source>, with the driver options below. The
// guest formats it under LUKS2 with a key made up in the guest (the data
// hub's secure mount without a key), so the host only ever holds
// ciphertext and nobody can open the disk once the pod is gone.
const (
	StorageDriverBlock = "blk"
	// DriverOptionEphemeralKey asks for a key made up in the guest.
	DriverOptionEphemeralKey = "encryption_key=ephemeral"
	// DriverOptionCreateFS says the disk is new: format it.
	DriverOptionCreateFS = "create_filesystem"
)

// blockEmptyDirMkfs are the ext4 options of a scratch disk, Kata's: no
// journal (nothing survives the pod), no reserved blocks, fewer inodes.
const blockEmptyDirMkfs = "-O ^has_journal -m 0 -i 163840 -I 128"

// setupBlock opens an encrypted scratch disk at target.
func (a *Agent) setupBlock(ctx context.Context, s *pb.Storage, target string) error {
	if s.Fstype != "ext4" || len(s.Options) > 0 || len(s.DriverOptions) != 2 ||
		!slices.Contains(s.DriverOptions, DriverOptionEphemeralKey) || !slices.Contains(s.DriverOptions, DriverOptionCreateFS) {
		return fmt.Errorf("%w: a blk storage is an encrypted scratch disk: ext4, no options, driver options %s and %s",
			ErrUnsupported, DriverOptionEphemeralKey, DriverOptionCreateFS)
	}
	if a.cfg.Volumes == nil {
		return fmt.Errorf("%w: no secure mount in this agent", ErrUnsupported)
	}
	dev, _, err := blockDevice(ctx, s.Source)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	// No key: the data hub makes up a random one, which never leaves it.
	return a.cfg.Volumes.SecureMount(ctx, &securemount.Request{VolumeType: securemount.VolumeBlockDevice,
		MountPoint: target, Options: map[string]string{
			"deviceId": dev, "encryptionType": "luks2", "sourceType": securemount.SourceEmpty,
			"targetType": securemount.TargetFileSystem, "filesystemType": "ext4", "mkfsOpts": blockEmptyDirMkfs,
		}})
}

// pciRoot is the guest's PCI root bus in sysfs.
const pciRoot = "/sys/devices/pci0000:00"

// diskWait bounds the wait for a hot-plugged disk to appear.
const diskWait = 10 * time.Second

// parsePCIPath reads Kata's PCI path of a device: the slot on the root
// bus, then on each bridge below it, two hex digits each ("10/00").
func parsePCIPath(p string) ([]int, error) {
	parts := strings.Split(p, "/")
	if len(parts) > 8 {
		return nil, fmt.Errorf("%w: PCI path %q is too deep", ErrInvalidArgument, p)
	}
	slots := make([]int, len(parts))
	for i, s := range parts {
		n, err := strconv.ParseUint(s, 16, 8)
		if err != nil || len(s) != 2 || n > 0x1f {
			return nil, fmt.Errorf("%w: PCI path %q: slot %q", ErrInvalidArgument, p, s)
		}
		slots[i] = int(n)
	}
	return slots, nil
}

// blockDevice waits for the virtio-blk disk at PCI path p and returns its
// device number (MAJ:MIN) and name (vdb).
func blockDevice(ctx context.Context, p string) (string, string, error) {
	slots, err := parsePCIPath(p)
	if err != nil {
		return "", "", err
	}
	ctx, cancel := context.WithTimeout(ctx, diskWait)
	defer cancel()
	for {
		if dev, name, ok := findBlockDevice(slots); ok {
			return dev, name, nil
		}
		select {
		case <-ctx.Done():
			return "", "", fmt.Errorf("%w: no disk at PCI path %s", ErrNotFound, p)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// findBlockDevice walks sysfs down the slots (bus numbers are the
// guest's: each bridge's child is found by its slot) to a disk.
func findBlockDevice(slots []int) (string, string, bool) {
	dir := pciRoot
	for _, slot := range slots {
		m, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("0000:??:%02x.0", slot)))
		if len(m) != 1 {
			return "", "", false
		}
		dir = m[0]
	}
	devs, _ := filepath.Glob(filepath.Join(dir, "virtio*", "block", "*", "dev"))
	if len(devs) != 1 {
		return "", "", false
	}
	b, err := os.ReadFile(devs[0])
	if err != nil {
		return "", "", false
	}
	return strings.TrimSpace(string(b)), filepath.Base(filepath.Dir(devs[0])), true
}

// A raw block volume (CRI's volumeDevices, a block PersistentVolume) that
// the pod's policy names in encrypted_volumes (agent/policy/default.rego)
// is opened with LUKS2 under a key the data hub fetches from the KBS after
// attestation, and its ext4 mounted in the container. The key's URI and
// the mount point come from the policy, which initdata carries and the
// TEE measures: the host only hands the device over (a "blk" device at
// its PCI path, as Kata's runtime describes one) and never learns the key.

// encryptedVolume is an entry of the policy's encrypted_volumes.
type encryptedVolume struct {
	Key        string `json:"key"`
	MountPoint string `json:"mount_point"`
	Format     bool   `json:"format"`
}

// luksMagic starts a LUKS header; blankBytes is how much of a device must
// be zero for it to count as never used.
var luksMagic = []byte("LUKS\xba\xbe")

const blankBytes = 1 << 20

// openDevices opens the request's devices the policy names as encrypted
// volumes and mounts them in the container (spec); guestSpec drops the
// host's device entries. A device of the spec the policy names that comes
// without its disk is refused: the container would write to its rootfs.
func (a *Agent) openDevices(ctx context.Context, r *pb.CreateContainerRequest, spec *specs.Spec) error {
	if spec.Linux == nil || len(spec.Linux.Devices) == 0 {
		return nil
	}
	vols, err := a.encryptedVolumes(ctx)
	if err != nil {
		return err
	}
	opened := map[string]bool{}
	for _, d := range r.Devices {
		vol, ok := vols[d.ContainerPath]
		if !ok || d.Type != StorageDriverBlock {
			continue
		}
		mp := LocalPath + "/pv-" + base64.URLEncoding.EncodeToString([]byte(d.VmPath))
		if err := a.openVolume(ctx, d.VmPath, mp, vol); err != nil {
			return fmt.Errorf("encrypted volume %s: %w", d.ContainerPath, err)
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: path.Clean(vol.MountPoint), Source: mp, Type: "bind",
			Options: []string{"rbind", "rw"}})
		opened[d.ContainerPath] = true
	}
	for _, d := range spec.Linux.Devices {
		if _, ok := vols[d.Path]; ok && !opened[d.Path] {
			return fmt.Errorf("%w: encrypted volume %s: no disk for it in the request", ErrInvalidArgument, d.Path)
		}
	}
	return nil
}

// encryptedVolumes reads the policy's encrypted_volumes.
func (a *Agent) encryptedVolumes(ctx context.Context) (map[string]encryptedVolume, error) {
	v, err := a.cfg.Policy.Value(ctx, "encrypted_volumes")
	if err != nil || v == nil {
		return nil, err
	}
	b, _ := json.Marshal(v)
	var vols map[string]encryptedVolume
	if err := json.Unmarshal(b, &vols); err != nil {
		return nil, fmt.Errorf("%w: the policy's encrypted_volumes: %v", ErrInvalidArgument, err)
	}
	for dev, vol := range vols {
		if !path.IsAbs(vol.MountPoint) || vol.Key == "" {
			return nil, fmt.Errorf("%w: encrypted volume %s: a key and an absolute mount_point are required", ErrInvalidArgument, dev)
		}
	}
	return vols, nil
}

// openVolume opens the device at PCI path pci as the pod's storage mp,
// once: the pod's containers share it.
func (a *Agent) openVolume(ctx context.Context, pci, mp string, vol encryptedVolume) error {
	if a.cfg.Volumes == nil {
		return fmt.Errorf("%w: no secure mount in this agent", ErrUnsupported)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.storages[mp] != "" {
		return nil
	}
	dev, name, err := blockDevice(ctx, pci)
	if err != nil {
		return err
	}
	source, err := luksSource("/dev/"+name, vol.Format)
	if err != nil {
		return err
	}
	target := filepath.Join(a.cfg.SandboxDir, strings.TrimPrefix(mp, SandboxPath))
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if err := a.cfg.Volumes.SecureMount(ctx, &securemount.Request{VolumeType: securemount.VolumeBlockDevice,
		MountPoint: target, Options: map[string]string{
			"deviceId": dev, "encryptionType": "luks2", "sourceType": source, "key": vol.Key,
			"targetType": securemount.TargetFileSystem, "filesystemType": "ext4",
		}}); err != nil {
		return err
	}
	a.storages[mp] = StorageDriverBlock
	a.log.Info("encrypted volume opened", "device", name, "mount_point", mp, "formatted", source == securemount.SourceEmpty)
	return nil
}

// luksSource tells an encrypted device to open from a blank one to
// format (when allowed); anything else is refused, never overwritten.
func luksSource(dev string, format bool) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, blankBytes)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", err
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, luksMagic):
		return securemount.SourceEncrypted, nil
	case !format:
		return "", fmt.Errorf("%w: %s has no LUKS2 header and the policy does not let the guest format it", ErrInvalidArgument, dev)
	case bytes.Count(head, []byte{0}) != len(head):
		return "", fmt.Errorf("%w: %s is neither LUKS2 nor blank: not formatting it", ErrInvalidArgument, dev)
	}
	return securemount.SourceEmpty, nil
}
