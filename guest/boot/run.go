package boot

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cocoon-cc/cocoon/initdata"
)

// UserHost is where, on QEMU's (restricted) user network, the host
// forwards the ports of its loopback it chose (the qemu backend's
// user_forwards).
const UserHost = "10.0.2.100"

// Loopback brings up lo. The NICs stay down until the runtime describes
// them (UpdateInterface): the pod network is CNI's, which only the host
// knows.
func Loopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

// ReadInitdata finds the initdata disk by its serial (Kata's, or the one
// Cocoon's first hosts gave it) and writes its document to path (0600); no
// disk means no initdata.
func ReadInitdata(path string) (bool, error) {
	serials, _ := filepath.Glob("/sys/block/*/serial")
	for _, s := range serials {
		b, err := os.ReadFile(s)
		if serial := strings.TrimSpace(string(b)); err != nil ||
			(serial != initdata.DiskSerial && serial != initdata.LegacyDiskSerial) {
			continue
		}
		dev := "/dev/" + filepath.Base(filepath.Dir(s))
		f, err := os.Open(dev)
		if err != nil {
			return false, err
		}
		defer f.Close()
		doc, err := initdata.DecodeDisk(f)
		if err != nil {
			return false, fmt.Errorf("%s: %w", dev, err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return false, err
		}
		return true, os.WriteFile(path, doc, 0o600)
	}
	return false, nil
}

// RunAgent starts the agent and reaps every child until the agent exits.
// SIGTERM (the VMM's shutdown) is passed to the agent.
func RunAgent(path string, args []string) error {
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = Console(), Console()
	sigs := make(chan os.Signal, 1)
	signalNotify(sigs)
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if pid == cmd.Process.Pid {
			return fmt.Errorf("agent exited: %s", describe(ws))
		}
	}
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}

// PowerOff ends the VM (QEMU runs with -no-reboot, so it exits).
func PowerOff() {
	unix.Sync()
	time.Sleep(100 * time.Millisecond)
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Not reached as PID 1; elsewhere (tests) just exit.
	syscall.Exit(1)
}
