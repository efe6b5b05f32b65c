// Package qemu is the VM sandbox backend: each pod is a QEMU guest booted
// from Cocoon's kernel and initramfs (make guest), its coco-agent reached
// over virtio-serial or vsock. With tee = "snp" or "tdx" the guest is a
// confidential VM whose launch binds the pod's initdata digest (HOST_DATA,
// MRCONFIGID); with tee = "none" it is an ordinary VM for development.
package qemu

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cocoon-cc/cocoon/initdata"
	"github.com/cocoon-cc/cocoon/runtime/sandbox"
	"github.com/cocoon-cc/cocoon/runtime/transport"
)

// Options configure the backend ([qemu] in the shim's TOML).
type Options struct {
	// Binary is the QEMU system emulator (default qemu-system-x86_64).
	Binary string `toml:"binary"`
	// Kernel and Initrd are the guest (make guest's build/guest/vmlinuz
	// and initramfs.cpio.gz).
	Kernel string `toml:"kernel"`
	Initrd string `toml:"initrd"`
	// Firmware is the OVMF image for snp (an AmdSev build) and tdx.
	Firmware string `toml:"firmware"`
	// Accel is "kvm" or "tcg". The default is tcg for tee = "none" (a
	// /dev/kvm that opens may still fail to run vCPUs, as on nested
	// hosts: ask for kvm explicitly) and kvm for the TEE modes.
	Accel string `toml:"accel"`
	// TEE is "none" (default), "snp" or "tdx".
	TEE string `toml:"tee"`
	// Channel is "serial" (default: virtio-serial) or "vsock".
	Channel string `toml:"channel"`
	// Network gives the guest QEMU's user network, through which the
	// host's loopback is 10.0.2.2 (default true).
	Network *bool `toml:"network"`
	// KernelParams are appended to the kernel command line.
	KernelParams string `toml:"kernel_params"`
	// CPU is the vCPU model (default max; snp needs an EPYC model).
	CPU string `toml:"cpu"`
}

// Defaults of a VM's size: the guest's own needs (kernel, agent, the
// image layers it pulls) before any container's limits are added.
const (
	DefaultMemoryMiB = 256
	DefaultVCPUs     = 1
)

// ErrInvalidOptions is wrapped by every configuration error.
var ErrInvalidOptions = errors.New("qemu sandbox: invalid options")

// Sandbox is one VM.
type Sandbox struct {
	cfg  sandbox.Config
	opts Options
	*sandbox.Process

	mu     sync.Mutex
	dialer transport.Dialer

	sizeMu sync.Mutex // cfg.VCPUs, cfg.MemoryMiB and dimms, which Resize grows
	dimms  int
}

var _ sandbox.Sandbox = (*Sandbox)(nil)

// New checks the options; Start boots the VM.
func New(cfg sandbox.Config, o Options) (*Sandbox, error) {
	if o.Binary == "" {
		o.Binary = "qemu-system-x86_64"
	}
	if o.TEE == "" {
		o.TEE = "none"
	}
	if o.Channel == "" {
		o.Channel = "serial"
	}
	if o.Accel == "" {
		o.Accel = "tcg"
		if o.TEE != "none" {
			o.Accel = "kvm"
		}
	}
	if o.CPU == "" {
		o.CPU = "max"
	}
	sizeDefaults(&cfg)
	switch {
	case cfg.ID == "" || !filepath.IsAbs(cfg.StateDir):
		return nil, fmt.Errorf("%w: an id and an absolute state directory are required", ErrInvalidOptions)
	case o.Kernel == "" || o.Initrd == "":
		return nil, fmt.Errorf("%w: kernel and initrd are required (make guest builds them)", ErrInvalidOptions)
	case o.TEE != "none" && o.TEE != "snp" && o.TEE != "tdx":
		return nil, fmt.Errorf("%w: tee %q (want none, snp or tdx)", ErrInvalidOptions, o.TEE)
	case o.TEE != "none" && o.Accel != "kvm":
		return nil, fmt.Errorf("%w: tee %s needs accel kvm", ErrInvalidOptions, o.TEE)
	case o.TEE != "none" && o.Firmware == "":
		return nil, fmt.Errorf("%w: tee %s needs an OVMF firmware", ErrInvalidOptions, o.TEE)
	case o.Channel != "serial" && o.Channel != "vsock":
		return nil, fmt.Errorf("%w: channel %q (want serial or vsock)", ErrInvalidOptions, o.Channel)
	case o.Accel != "kvm" && o.Accel != "tcg":
		return nil, fmt.Errorf("%w: accel %q (want kvm or tcg)", ErrInvalidOptions, o.Accel)
	}
	return &Sandbox{cfg: cfg, opts: o, Process: sandbox.NewProcess()}, nil
}

func (s *Sandbox) path(name string) string { return filepath.Join(s.cfg.StateDir, name) }

// vsockCID derives a guest CID (>= 3) from the sandbox id.
func (s *Sandbox) vsockCID() uint32 {
	sum := sha256.Sum256([]byte(s.cfg.ID))
	return 3 + (uint32(sum[0])<<16|uint32(sum[1])<<8|uint32(sum[2]))%(1<<24)
}

// Args is QEMU's command line for this sandbox.
func (s *Sandbox) Args() ([]string, error) {
	o := s.opts
	machine := "q35,accel=" + o.Accel
	args := []string{"-nodefaults", "-nographic", "-no-reboot", "-no-user-config",
		"-cpu", o.CPU}
	args = append(args, s.sizeArgs()...)
	args = append(args, "-qmp", "unix:"+s.path("qmp.sock")+",server=on,wait=off",
		"-serial", "file:"+s.path("console.log"),
		"-kernel", o.Kernel, "-initrd", o.Initrd,
		"-device", "virtio-rng-pci")
	args = append(args, "-append", Cmdline(o.Channel, s.kernelParams()))
	switch o.TEE {
	case "snp":
		machine += ",confidential-guest-support=sev0,memory-backend=ram0"
		obj := "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on"
		if len(s.cfg.Initdata) > 0 {
			// HOST_DATA is 32 bytes: the initdata document's SHA-256.
			sum := sha256.Sum256(s.cfg.Initdata)
			obj += ",host-data=" + base64.StdEncoding.EncodeToString(sum[:])
		}
		args = append(args, "-object", "memory-backend-memfd,id=ram0,size="+strconv.Itoa(s.cfg.MemoryMiB)+"M,share=true",
			"-object", obj, "-bios", o.Firmware)
	case "tdx":
		machine += ",confidential-guest-support=tdx0,kernel-irqchip=split"
		obj := "tdx-guest,id=tdx0"
		if len(s.cfg.Initdata) > 0 {
			// MRCONFIGID is 48 bytes: the initdata document's SHA-384.
			sum := sha512.Sum384(s.cfg.Initdata)
			obj += ",mrconfigid=" + base64.StdEncoding.EncodeToString(sum[:])
		}
		args = append(args, "-object", obj, "-bios", o.Firmware)
	}
	args = append([]string{"-machine", machine}, args...)
	switch o.Channel {
	case "serial":
		args = append(args, "-device", "virtio-serial-pci",
			"-chardev", "socket,id=agent,path="+s.path("agent.sock")+",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name=agent.0")
	case "vsock":
		args = append(args, "-device", "vhost-vsock-pci,guest-cid="+strconv.FormatUint(uint64(s.vsockCID()), 10))
	}
	if o.Network == nil || *o.Network {
		args = append(args, "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,romfile=")
	}
	if len(s.cfg.Initdata) > 0 {
		args = append(args, "-drive", "file="+s.path("initdata.img")+",if=none,id=initdata,format=raw,readonly=on",
			"-device", "virtio-blk-pci,drive=initdata,serial="+initdata.DiskSerial)
	}
	return args, nil
}

// Cmdline is the guest kernel's command line. SNP's measured direct boot
// hashes it into the launch digest: scripts/build-guest.sh measures the
// same line (CMDLINE there).
func Cmdline(channel, extra string) string {
	c := "console=ttyS0 panic=-1 quiet cocoon.channel=" + channel
	if extra != "" {
		c += " " + extra
	}
	return c
}

// Start boots the VM and waits until its agent answers.
func (s *Sandbox) Start(ctx context.Context) error {
	if err := s.launch(); err != nil {
		return err
	}
	if err := s.connect(ctx); err != nil {
		s.Stop(context.WithoutCancel(ctx))
		return fmt.Errorf("%w: %v; console: %s", sandbox.ErrAgentUnreachable, err, s.consoleTail())
	}
	return nil
}

func (s *Sandbox) launch() error {
	if len(s.cfg.Initdata) > 0 {
		img, err := initdata.EncodeDisk(s.cfg.Initdata)
		if err != nil {
			return err
		}
		if err := os.WriteFile(s.path("initdata.img"), img, 0o600); err != nil {
			return err
		}
	}
	args, err := s.Args()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(s.path("qemu.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(s.opts.Binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A VM never outlives the shim that owns it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := s.Process.Start(cmd, s.exited); err != nil {
		return fmt.Errorf("start %s: %w", s.opts.Binary, err)
	}
	return nil
}

// exited closes the channel and says why the VM ended.
func (s *Sandbox) exited(err error) error {
	s.mu.Lock()
	if s.dialer != nil {
		s.dialer.Close()
	}
	s.mu.Unlock()
	log, _ := os.ReadFile(s.path("qemu.log"))
	return fmt.Errorf("VM exited: %v: %s; console: %s", err, strings.TrimSpace(string(log)), s.consoleTail())
}

// connect opens the channel and waits for GetGuestDetails to answer.
func (s *Sandbox) connect(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	uri := "serial://" + s.path("agent.sock")
	if s.opts.Channel == "vsock" {
		uri = fmt.Sprintf("vsock://%d:1024", s.vsockCID())
	}
	var d transport.Dialer
	var err error
	for {
		if d, err = transport.NewDialer(ctx, uri); err == nil {
			if err = sandbox.Ping(ctx, d.Dial); err == nil {
				break
			}
			d.Close()
		}
		select {
		case <-ctx.Done():
			if e := s.Err(); e != nil {
				return e
			}
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.mu.Lock()
	s.dialer = d
	s.mu.Unlock()
	return nil
}

// Dial opens a connection to the agent.
func (s *Sandbox) Dial(ctx context.Context) (net.Conn, error) {
	s.mu.Lock()
	d := s.dialer
	s.mu.Unlock()
	if d == nil {
		return nil, fmt.Errorf("%w: not started", sandbox.ErrAgentUnreachable)
	}
	c, err := d.Dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", sandbox.ErrAgentUnreachable, err)
	}
	return c, nil
}

// Stop ends the VM: SIGTERM makes QEMU exit at once (a VM holds nothing
// the host must keep), SIGKILL follows if ctx ends first.
func (s *Sandbox) Stop(ctx context.Context) error {
	s.Process.Stop(ctx)
	for _, f := range []string{"agent.sock", "qmp.sock", "initdata.img"} {
		os.Remove(s.path(f))
	}
	return nil
}

// Info describes the VM.
func (s *Sandbox) Info() sandbox.Info {
	return sandbox.Info{Backend: "qemu", TEE: s.opts.TEE, Confidential: s.opts.TEE != "none", Pid: s.Pid()}
}

// consoleTail is the end of the guest's console, for error messages.
func (s *Sandbox) consoleTail() string {
	b, _ := os.ReadFile(s.path("console.log"))
	const max = 800
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}
