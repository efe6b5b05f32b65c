package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

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
	dev, err := blockDevice(ctx, s.Source)
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
// device number (MAJ:MIN).
func blockDevice(ctx context.Context, p string) (string, error) {
	slots, err := parsePCIPath(p)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, diskWait)
	defer cancel()
	for {
		if dev, ok := findBlockDevice(slots); ok {
			return dev, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: no disk at PCI path %s", ErrNotFound, p)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// findBlockDevice walks sysfs down the slots (bus numbers are the
// guest's: each bridge's child is found by its slot) to a disk.
func findBlockDevice(slots []int) (string, bool) {
	dir := pciRoot
	for _, slot := range slots {
		m, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("0000:??:%02x.0", slot)))
		if len(m) != 1 {
			return "", false
		}
		dir = m[0]
	}
	devs, _ := filepath.Glob(filepath.Join(dir, "virtio*", "block", "*", "dev"))
	if len(devs) != 1 {
		return "", false
	}
	b, err := os.ReadFile(devs[0])
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}
