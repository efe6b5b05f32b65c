package agent

import (
	"context"
	"fmt"
	"os"
	"slices"

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
