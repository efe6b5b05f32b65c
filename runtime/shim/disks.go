package shim

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cocoon-cc/cocoon/agent"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// A VM pod's disk-backed emptyDir volumes live on scratch disks, as with
// Kata's emptydir_mode = "block-encrypted": a sparse file in the pod's
// state directory (removed with it), plugged into the VM as a virtio-blk
// disk and sent as Kata's "blk" storage asking for a key made up in the
// guest, where the agent formats it under LUKS2. The host holds only
// ciphertext, and the guest's memory is not spent on the volume.

// EmptyDir modes ([sandbox] emptydir_mode).
const (
	EmptyDirBlockEncrypted = "block-encrypted"
	EmptyDirGuestLocal     = "local"
)

// defaultEmptyDirMiB is a scratch disk's size. The kubelet does not tell
// CRI a disk emptyDir's sizeLimit (Kata notes the same), so the size is
// the configuration's; the file is sparse: only what the guest writes
// takes host space.
const defaultEmptyDirMiB = 4096

// diskAttacher is a sandbox that takes disks (the qemu backend).
type diskAttacher interface {
	AttachDisk(ctx context.Context, path string) (pciPath string, err error)
}

// scratchDisks are a pod's emptyDir disks, by the emptyDir's host
// directory: the pod's containers share each.
type scratchDisks struct {
	sb    diskAttacher
	dir   string // the pod's state directory
	bytes int64

	mu    sync.Mutex
	byDir map[string]*pb.Storage
}

// newScratchDisks returns the pod's scratch disks, or nil when its
// emptyDir volumes are guest directories (the configuration says so, or
// the sandbox takes no disks).
func newScratchDisks(sb any, dir string, c *Config) *scratchDisks {
	a, ok := sb.(diskAttacher)
	if !ok || c.Sandbox.EmptyDirMode != EmptyDirBlockEncrypted {
		return nil
	}
	return &scratchDisks{sb: a, dir: dir, bytes: int64(c.Sandbox.EmptyDirSizeMiB) << 20, byDir: map[string]*pb.Storage{}}
}

// storage is the blk storage of the emptyDir at src (named name), its
// disk attached on first use.
func (d *scratchDisks) storage(ctx context.Context, src, name string, fsGroup *pb.FSGroup) (*pb.Storage, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.byDir[src]; s != nil {
		return s, nil
	}
	img := filepath.Join(d.dir, "emptydir-"+name+".img")
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("emptyDir %s: scratch disk: %w", name, err)
	}
	err = f.Truncate(d.bytes)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var pci string
	if err == nil {
		pci, err = d.sb.AttachDisk(ctx, img)
	}
	if err != nil {
		os.Remove(img)
		return nil, fmt.Errorf("emptyDir %s: scratch disk: %w", name, err)
	}
	s := &pb.Storage{Driver: agent.StorageDriverBlock, Source: pci, Fstype: "ext4",
		MountPoint:    agent.LocalPath + "/" + base64.URLEncoding.EncodeToString([]byte(pci)),
		DriverOptions: []string{agent.DriverOptionEphemeralKey, agent.DriverOptionCreateFS}, Shared: true, FsGroup: fsGroup}
	d.byDir[src] = s
	return s, nil
}
