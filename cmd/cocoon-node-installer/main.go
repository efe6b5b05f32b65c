// cocoon-node-installer installs Cocoon's runtime on the node it runs on
// (the CocoonRuntime's DaemonSet pod: privileged, the host's PID
// namespace, the install directory and containerd's configuration
// mounted at their host paths), and removes it again.
//
//	cocoon-node-installer install   [flags]  install, label the node, wait for SIGTERM
//	cocoon-node-installer uninstall [flags]  remove, unlabel the node, wait for SIGTERM
//	cocoon-node-installer ready              exit 0 once install/uninstall finished (probe)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/cocoon-cc/cocoon/operator/nodeinstall"
)

// readyFile marks a finished install or uninstall (an emptyDir of the pod).
const readyFile = "/run/cocoon-installer/ready"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cocoon-node-installer install|uninstall|ready [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch os.Args[1] {
	case "install", "uninstall":
		err = run(ctx, os.Args[1], os.Args[2:])
	case "ready":
		_, err = os.Stat(readyFile)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cocoon-node-installer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cmd string, args []string) error {
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	self, _ := os.Executable()
	var o nodeinstall.Options
	var flavours, restart, unit, runtimeName, node, address string
	var snap nodeinstall.Snapshotter
	fs.StringVar(&node, "node", os.Getenv("NODE_NAME"), "this node's name")
	fs.StringVar(&runtimeName, "runtime", "", "the CocoonRuntime's name")
	fs.StringVar(&o.InstallDir, "install-dir", "/opt/cocoon", "host directory of Cocoon's files")
	fs.StringVar(&o.SourceDir, "source-dir", filepath.Dir(self), "directory of the binaries to install")
	fs.StringVar(&flavours, "flavours", "qemu", "comma-separated flavours: qemu, qemu-snp, qemu-tdx, local")
	fs.StringVar(&o.Guest, "guest", "", "the guest image, by digest")
	fs.BoolVar(&o.PlainHTTP, "guest-plain-http", false, "pull the guest over plain HTTP")
	fs.IntVar(&o.Shim.MemoryMiB, "memory-mib", 0, "the VM's own memory (0: the shim's default)")
	fs.IntVar(&o.Shim.VCPUs, "vcpus", 0, "the VM's own vCPUs (0: the shim's default)")
	fs.StringVar(&o.Shim.StartTimeout, "start-timeout", "", "sandbox boot timeout")
	fs.StringVar(&o.Shim.KernelParams, "kernel-params", "", "added guest kernel parameters")
	fs.StringVar(&o.Containerd.ConfigPath, "containerd-config", "/etc/containerd/config.toml", "containerd's configuration")
	fs.StringVar(&o.Containerd.DropInDir, "containerd-dropin-dir", "/etc/containerd/conf.d", "directory of Cocoon's drop-in")
	fs.StringVar(&address, "containerd-address", "/run/containerd/containerd.sock", "containerd's socket")
	fs.StringVar(&restart, "restart", "systemd", "how to restart containerd: systemd or signal")
	fs.StringVar(&unit, "unit", "containerd", "containerd's systemd unit")
	fs.StringVar(&o.Containerd.Root, "host-root", "/", "where the host's root is mounted (paths in flags are the host's)")
	fs.StringVar(&snap.Images, "snapshotter-images", "", "install cocoon-snapshotter for the images this regular expression selects (none: no snapshotter)")
	fs.StringVar(&snap.Address, "snapshotter-address", "/run/cocoon-snapshotter/snapshotter.sock", "cocoon-snapshotter's socket")
	fs.Parse(args)
	o.Containerd.Address = address
	address = filepath.Join(o.Containerd.Root, address)
	o.Flavours = strings.Split(flavours, ",")
	if snap.Images != "" {
		o.Snapshotter = &snap
	}
	switch restart {
	case "systemd":
		systemctl := nodeinstall.Systemctl{Root: o.Containerd.Root}
		o.Restarter = nodeinstall.SystemdRestarter{Unit: unit, Address: address, Systemctl: systemctl}
		o.Services = nodeinstall.SystemdServices{Systemctl: systemctl, UnitDir: "/etc/systemd/system",
			Containerd: strings.TrimSuffix(unit, ".service"), Root: o.Containerd.Root}
	case "signal":
		o.Restarter = nodeinstall.SignalRestarter{ConfigPath: o.Containerd.ConfigPath, Address: address}
		o.Services = nodeinstall.HostProcesses{RunDir: filepath.Join(o.InstallDir, "run"), Containerd: o.Containerd}
	default:
		return fmt.Errorf("--restart %q: systemd or signal", restart)
	}
	if node == "" {
		return errors.New("--node (or NODE_NAME) is required")
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	os.Remove(readyFile)
	if cmd == "install" {
		err = install(ctx, cs, node, runtimeName, o)
	} else {
		err = uninstall(ctx, cs, node, o)
	}
	if err != nil {
		return err
	}
	if err := os.WriteFile(readyFile, nil, 0o644); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func install(ctx context.Context, cs kubernetes.Interface, node, runtimeName string, o nodeinstall.Options) error {
	state := nodeinstall.NodeState{Runtime: runtimeName, Phase: nodeinstall.PhaseInstalling}
	if err := nodeinstall.Record(ctx, cs, node, state); err != nil {
		return err
	}
	res, err := nodeinstall.Install(ctx, o)
	if err != nil {
		state.Phase, state.Message = nodeinstall.PhaseFailed, err.Error()
		return errors.Join(err, nodeinstall.Record(ctx, cs, node, state))
	}
	fmt.Printf("installed guest %s, flavours %v (containerd restarted: %v; snapshotter: %q)\n", res.Guest, res.Flavours, res.Restarted, res.Snapshotter)
	state.Phase, state.Guest, state.Flavours, state.Snapshotter = nodeinstall.PhaseInstalled, res.Guest, res.Flavours, res.Snapshotter
	return nodeinstall.Record(ctx, cs, node, state)
}

func uninstall(ctx context.Context, cs kubernetes.Interface, node string, o nodeinstall.Options) error {
	// Unlabelled first: no new Cocoon pod comes to the node.
	if err := nodeinstall.Record(ctx, cs, node, nodeinstall.NodeState{Phase: nodeinstall.PhaseRemoving}); err != nil {
		return err
	}
	if err := nodeinstall.Uninstall(ctx, o); err != nil {
		return errors.Join(err, nodeinstall.Record(ctx, cs, node, nodeinstall.NodeState{Phase: nodeinstall.PhaseFailed, Message: err.Error()}))
	}
	fmt.Println("removed")
	return nodeinstall.Record(ctx, cs, node, nodeinstall.NodeState{Phase: nodeinstall.PhaseRemoved})
}
