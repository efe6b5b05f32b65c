package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

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
