// Command coco-init is the guest's PID 1 in Cocoon's VM image: it prepares
// the guest, runs coco-agent and powers the VM off when the agent ends.
package main

import (
	"fmt"
	"os"

	"github.com/cocoon-cc/cocoon/guest/boot"
)

const (
	agentPath    = "/sbin/coco-agent"
	initdataPath = "/run/cocoon/initdata.toml"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "coco-init: not PID 1; it runs as a VM's init")
		os.Exit(2)
	}
	err := run()
	fmt.Fprintln(boot.Console(), "coco-init:", err)
	boot.PowerOff()
}

func run() error {
	// The kernel starts init with no PATH; the agent's helpers (runc's
	// nsenter, the data hub's cryptsetup and mkfs.ext4) are found by it.
	os.Setenv("PATH", "/sbin:/usr/sbin:/usr/local/bin:/bin:/usr/bin")
	if err := boot.MountAll(); err != nil {
		return err
	}
	con := boot.Console()
	if err := boot.LoadModules("/lib/modules"); err != nil {
		return err
	}
	if err := boot.Loopback(); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	b, _ := os.ReadFile("/proc/cmdline")
	p := boot.ParseCmdline(string(b))
	args := []string{"--listen", p.Channel, "--state-dir", "/run/cocoon", "--log-level", p.LogLevel, "--no-pivot-root",
		"--guest-components", "/usr/local/bin"}
	if p.UserNetwork {
		args = append(args, "--host-loopback", boot.UserHost)
	}
	found, err := boot.ReadInitdata(initdataPath)
	if err != nil {
		return err
	}
	if found {
		args = append(args, "--initdata", initdataPath)
	}
	os.WriteFile("/proc/sys/kernel/hostname", []byte("cocoon"), 0o644)
	fmt.Fprintln(con, "coco-init: starting the agent on", p.Channel)
	return boot.RunAgent(agentPath, args)
}
