package shim

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"

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

// podDisks are the disks a pod's VM was given: emptyDir scratch disks and
// raw block volumes, each attached once and shared by the pod's
// containers.
type podDisks struct {
	sb        diskAttacher
	dir       string // the pod's state directory
	emptyDirs bool   // disk emptyDirs are scratch disks
	bytes     int64

	mu     sync.Mutex
	byPath map[string]string // PCI paths by host file or device
}

// newPodDisks returns the pod's disks, or nil when its sandbox takes none.
func newPodDisks(sb any, dir string, c *Config) *podDisks {
	a, ok := sb.(diskAttacher)
	if !ok {
		return nil
	}
	return &podDisks{sb: a, dir: dir, emptyDirs: c.Sandbox.EmptyDirMode == EmptyDirBlockEncrypted,
		bytes: int64(c.Sandbox.EmptyDirSizeMiB) << 20, byPath: map[string]string{}}
}

// scratch is the blk storage of the emptyDir named name, its disk made
// and attached on first use.
func (d *podDisks) scratch(ctx context.Context, name string, fsGroup *pb.FSGroup) (*pb.Storage, error) {
	img := filepath.Join(d.dir, "emptydir-"+name+".img")
	pci, err := d.attach(ctx, img, func() error {
		f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		err = f.Truncate(d.bytes)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		os.Remove(img)
		return nil, fmt.Errorf("emptyDir %s: scratch disk: %w", name, err)
	}
	return &pb.Storage{Driver: agent.StorageDriverBlock, Source: pci, Fstype: "ext4",
		MountPoint:    agent.LocalPath + "/" + base64.URLEncoding.EncodeToString([]byte(pci)),
		DriverOptions: []string{agent.DriverOptionEphemeralKey, agent.DriverOptionCreateFS}, Shared: true, FsGroup: fsGroup}, nil
}

// attach plugs path into the VM once (make creates it first) and returns
// its PCI path.
func (d *podDisks) attach(ctx context.Context, path string, make func() error) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if pci, ok := d.byPath[path]; ok {
		return pci, nil
	}
	if make != nil {
		if err := make(); err != nil {
			return "", err
		}
	}
	pci, err := d.sb.AttachDisk(ctx, path)
	if err != nil {
		return "", err
	}
	d.byPath[path] = pci
	return pci, nil
}

// blockDevices attaches the host block devices the spec hands the
// container (CRI's volumeDevices: raw block PersistentVolumes) and
// describes them as Kata's runtime does: "blk" devices at their PCI path.
// What the guest does with one is the pod's policy's to say (an encrypted
// volume, agent/blockvol.go); the host only passes it on.
func (d *podDisks) blockDevices(ctx context.Context, spec *specs.Spec) ([]*pb.Device, error) {
	if spec.Linux == nil {
		return nil, nil
	}
	var devs []*pb.Device
	for _, dev := range spec.Linux.Devices {
		if dev.Type != "b" {
			continue
		}
		host, err := hostDevice(dev.Major, dev.Minor)
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", dev.Path, err)
		}
		pci, err := d.attach(ctx, host, nil)
		if err != nil {
			return nil, fmt.Errorf("device %s (%s): %w", dev.Path, host, err)
		}
		devs = append(devs, &pb.Device{Id: host, Type: agent.StorageDriverBlock, VmPath: pci, ContainerPath: dev.Path})
	}
	return devs, nil
}

// hostDevice is the host's node of block device major:minor.
func hostDevice(major, minor int64) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", major, minor))
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(l, "DEVNAME="); ok && filepath.IsLocal(name) {
			return "/dev/" + name, nil
		}
	}
	return "", fmt.Errorf("block device %d:%d has no name", major, minor)
}
