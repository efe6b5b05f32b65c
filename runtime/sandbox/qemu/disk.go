package qemu

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/cocoon-cc/cocoon/runtime/sandbox"
)

// Disks (a pod's scratch disks for emptyDir volumes, its raw block
// volumes) are hot-plugged as virtio-blk devices, each behind a PCIe root
// port the VM boots with: q35's root bus takes no hot-plugged device. The
// guest finds a disk by its PCI path, Kata's "<root port slot>/<device
// slot>" in hex ("10/00"), which the agent gets in the storage or device
// that names it. Confidential guests take PCI hotplug too; what they
// cannot trust is the disk's contents, which the guest encrypts.

// diskSlots is how many disks a VM can take; diskSlot0 is the first root
// port's slot on the root bus (clear of the devices QEMU places itself).
const (
	diskSlots = 8
	diskSlot0 = 0x10
)

// diskArgs are the root ports the disks are plugged into.
func diskArgs() []string {
	var args []string
	for i := range diskSlots {
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=dp%d,bus=pcie.0,chassis=%d,addr=0x%x",
			i, i+1, diskSlot0+i))
	}
	return args
}

// AttachDisk plugs the file or block device at path into the VM as a
// virtio-blk disk and returns its PCI path in the guest. The disk stays
// until the VM ends.
func (s *Sandbox) AttachDisk(ctx context.Context, path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	driver := "file"
	if fi.Mode()&os.ModeDevice != 0 {
		driver = "host_device"
	}
	s.diskMu.Lock()
	defer s.diskMu.Unlock()
	if s.disks == diskSlots {
		return "", fmt.Errorf("%w: all %d disk slots are used", sandbox.ErrNoHotplug, diskSlots)
	}
	q, err := dialQMP(ctx, s.path("qmp.sock"))
	if err != nil {
		return "", err
	}
	defer q.Close()
	id := "disk" + strconv.Itoa(s.disks)
	if err := q.run(ctx, "blockdev-add", map[string]any{"driver": "raw", "node-name": id,
		"file": map[string]any{"driver": driver, "filename": path}}, nil); err != nil {
		return "", err
	}
	if err := q.run(ctx, "device_add", map[string]any{"driver": "virtio-blk-pci", "id": id, "drive": id,
		"bus": "dp" + strconv.Itoa(s.disks)}, nil); err != nil {
		q.run(ctx, "blockdev-del", map[string]any{"node-name": id}, nil)
		return "", err
	}
	pci := fmt.Sprintf("%02x/00", diskSlot0+s.disks)
	s.disks++
	return pci, nil
}
