package nodeinstall

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Binaries are what the installer copies from its image to the host.
var Binaries = []string{"containerd-shim-coco-v2", "coco-agent"}

// Options are one node's installation, as the CocoonRuntime says.
type Options struct {
	// InstallDir is a host path; the host's root is HostRoot
	// (Containerd.Root) where the installer runs.
	InstallDir string
	// SourceDir holds Binaries (the installer image's).
	SourceDir string
	// Flavours are the sandboxes asked for (qemu, qemu-snp, qemu-tdx,
	// local); Install offers those the host supports.
	Flavours   []string
	Guest      string
	PlainHTTP  bool
	Shim       ShimSettings
	Containerd Containerd
	Restarter  Restarter
	// Snapshotter, when set, runs cocoon-snapshotter as containerd's CRI
	// snapshotter; when nil, one an earlier install ran is removed.
	Snapshotter *Snapshotter
	// Services runs the snapshotter on the host.
	Services Service
}

// Snapshotter is cocoon-snapshotter's installation.
type Snapshotter struct {
	// Images is the regular expression of the image references pulled
	// only in the guest (its --images); other images are unpacked on the
	// host, for runc's pods.
	Images string
	// Address is its socket, a host path.
	Address string
}

// SnapshotterName is cocoon-snapshotter's proxy plugin in containerd.
const SnapshotterName = "cocoon"

// snapshotterBin is cocoon-snapshotter's binary, also its service's name.
const snapshotterBin = "cocoon-snapshotter"

// ShimSettings are the shim configuration's tunables (zero: its default).
type ShimSettings struct {
	MemoryMiB    int
	VCPUs        int
	StartTimeout string
	KernelParams string
}

// Restarter restarts containerd and waits until it serves the runtimes.
type Restarter interface {
	Restart(ctx context.Context, handlers []string) error
}

// Result is what Install did.
type Result struct {
	Guest     string   // the guest's digest
	Flavours  []string // the flavours offered (the host supports them)
	Restarted bool     // containerd was restarted
	// Snapshotter says how cocoon-snapshotter runs ("": not installed).
	Snapshotter string
}

// Handler is the RuntimeClass handler (containerd runtime) of a flavour.
func Handler(flavour string) string { return "cocoon-" + flavour }

// Install installs (or updates) Cocoon on the node and restarts containerd
// when its configuration changed. Running Cocoon pods keep their shims and
// VMs: containerd re-adopts the shims, and a guest that a VM still runs
// is removed only once the VM is gone (a later Install).
func Install(ctx context.Context, o Options) (Result, error) {
	flavours, err := Supported(o.Flavours)
	if err != nil {
		return Result{}, err
	}
	if o.Snapshotter != nil {
		if _, err := regexp.Compile(o.Snapshotter.Images); err != nil {
			return Result{}, fmt.Errorf("%w: images: %v", ErrSnapshotter, err)
		}
	}
	binaries := Binaries
	if o.Snapshotter != nil {
		binaries = append(slices.Clip(binaries), snapshotterBin)
	}
	bin := filepath.Join(o.InstallDir, "bin")
	changedBin := map[string]bool{}
	for _, b := range binaries {
		if changedBin[b], err = installFile(filepath.Join(o.SourceDir, b), o.local(filepath.Join(bin, b)), 0o755); err != nil {
			return Result{}, fmt.Errorf("install %s: %w", b, err)
		}
	}
	digest, err := PullGuest(ctx, o.local(o.InstallDir), o.Guest, o.PlainHTTP)
	if err != nil {
		return Result{}, err
	}
	guest := GuestDir(o.InstallDir, digest)
	var runtimes []Runtime
	for _, f := range flavours {
		cfg, err := o.shimConfig(f, guest)
		if err != nil {
			return Result{}, err
		}
		path := filepath.Join(o.InstallDir, "etc", f+".toml")
		if err := os.MkdirAll(o.local(filepath.Dir(path)), 0o755); err != nil {
			return Result{}, err
		}
		if _, err := writeIfChanged(o.local(path), cfg, 0o644); err != nil {
			return Result{}, err
		}
		runtimes = append(runtimes, Runtime{Handler: Handler(f), ShimPath: filepath.Join(bin, Binaries[0]), ConfigPath: path})
	}
	res := Result{Guest: digest, Flavours: flavours}
	var snapshotter string
	if o.Snapshotter != nil {
		// Serving before containerd is restarted to use it.
		if res.Snapshotter, err = o.startSnapshotter(ctx, changedBin[snapshotterBin]); err != nil {
			return res, err
		}
		snapshotter = o.Snapshotter.Address
	}
	changed, err := o.Containerd.Install(runtimes, snapshotter)
	if err != nil {
		return res, err
	}
	if changed {
		handlers := make([]string, len(runtimes))
		for i, r := range runtimes {
			handlers[i] = r.Handler
		}
		if err := o.Restarter.Restart(ctx, handlers); err != nil {
			return res, err
		}
		res.Restarted = true
	}
	if o.Snapshotter == nil {
		err = o.removeSnapshotter(ctx)
	} else {
		err = o.pruneStaleSnapshots(ctx)
	}
	if err != nil {
		return res, err
	}
	return res, RemoveUnusedGuests(o.local(o.InstallDir), digest)
}

// Uninstall removes what Install added: containerd's drop-in and import
// (restarting containerd), the snapshotter, then the install directory.
func Uninstall(ctx context.Context, o Options) error {
	changed, err := o.Containerd.Remove()
	if err != nil {
		return err
	}
	if changed {
		if err := o.Restarter.Restart(ctx, nil); err != nil {
			return err
		}
	}
	if err := o.removeSnapshotter(ctx); err != nil {
		return err
	}
	return os.RemoveAll(o.local(o.InstallDir))
}

// local is where the installer reaches the host path p.
func (o Options) local(p string) string { return o.Containerd.local(p) }

// ErrFlavour is a flavour the installer does not know.
var ErrFlavour = errors.New("unknown flavour")

// Supported filters the flavours asked for down to those the host can
// run: SEV-SNP needs /dev/sev, TDX the kvm_intel tdx parameter.
func Supported(flavours []string) ([]string, error) {
	var out []string
	for _, f := range flavours {
		switch f {
		case "qemu", "local":
		case "qemu-snp":
			if _, err := os.Stat("/dev/sev"); err != nil { // a privileged pod has the host's /dev
				continue
			}
		case "qemu-tdx":
			if b, _ := os.ReadFile("/sys/module/kvm_intel/parameters/tdx"); strings.TrimSpace(string(b)) != "Y" {
				continue
			}
		default:
			return nil, fmt.Errorf("%w %q", ErrFlavour, f)
		}
		out = append(out, f)
	}
	return out, nil
}

// shimConfig is the shim's configuration for a flavour.
func (o Options) shimConfig(flavour, guest string) ([]byte, error) {
	sandbox := map[string]any{"backend": "qemu"}
	if o.Shim.MemoryMiB > 0 {
		sandbox["memory_mib"] = o.Shim.MemoryMiB
	}
	if o.Shim.VCPUs > 0 {
		sandbox["vcpus"] = o.Shim.VCPUs
	}
	if o.Shim.StartTimeout != "" {
		sandbox["start_timeout"] = o.Shim.StartTimeout
	}
	qemu := map[string]any{"kernel": filepath.Join(guest, GuestKernel), "initrd": filepath.Join(guest, GuestInitrd), "tee": "none"}
	if o.Shim.KernelParams != "" {
		qemu["kernel_params"] = o.Shim.KernelParams
	}
	doc := map[string]any{"sandbox": sandbox, "qemu": qemu}
	switch flavour {
	case "qemu-snp":
		// A named model: its CPUID signature is part of the launch
		// digest, which the operator computes for KeyBrokers.
		qemu["tee"], qemu["firmware"], qemu["cpu"] = "snp", filepath.Join(guest, GuestSNPFirm), SNPCPUModel
	case "qemu-tdx":
		qemu["tee"], qemu["firmware"] = "tdx", filepath.Join(guest, GuestTDXFirm)
	case "local":
		sandbox["backend"] = "local"
		delete(doc, "qemu")
		doc["local"] = map[string]any{"agent_path": filepath.Join(o.InstallDir, "bin", "coco-agent")}
	}
	if fw, ok := qemu["firmware"].(string); ok {
		if _, err := os.Stat(o.local(fw)); err != nil {
			return nil, fmt.Errorf("%w: flavour %s needs %s in the guest image", ErrGuestImage, flavour, filepath.Base(fw))
		}
	}
	var b strings.Builder
	b.WriteString("# Written by cocoon-node-installer (CocoonRuntime).\n")
	if err := toml.NewEncoder(&b).Encode(doc); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

// installFile installs src as dst through a rename (a running shim keeps
// its old binary); changed says whether dst differed.
func installFile(src, dst string, mode os.FileMode) (changed bool, err error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return false, err
	}
	return writeIfChanged(dst, b, mode)
}
