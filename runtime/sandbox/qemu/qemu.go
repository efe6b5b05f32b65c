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
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cocoon-cc/cocoon/initdata"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
	"github.com/cocoon-cc/cocoon/runtime/network"
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
	// UserNetwork gives the guest QEMU's user network too, for
	// development (ctr) only: restricted, the guest reaches nothing of the
	// host or beyond but the UserForwards. Pods get their network from
	// CNI (Config.NetNS) whatever this says.
	UserNetwork bool `toml:"user_network"`
	// UserForwards are the ports of the host's loopback the guest reaches
	// at 10.0.2.100 on the user network, one by one: QEMU's guestfwd runs
	// busybox nc (busybox-static) on the host per connection (a chardev
	// target would carry one connection in QEMU's life).
	UserForwards []uint16 `toml:"user_forwards"`
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
	net    *network.Pod // the pod network the VM is attached to, if any

	diskMu sync.Mutex
	disks  int // disks attached (AttachDisk)
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
	case len(o.UserForwards) > 0 && !o.UserNetwork:
		return nil, fmt.Errorf("%w: user_forwards without user_network", ErrInvalidOptions)
	case slices.Contains(o.UserForwards, 0):
		return nil, fmt.Errorf("%w: user_forwards: port 0", ErrInvalidOptions)
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
	params := s.kernelParams()
	if o.UserNetwork {
		params = strings.TrimSpace(params + " cocoon.net=user")
	}
	args = append(args, "-append", Cmdline(o.Channel, params))
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
	args = append(args, s.nicArgs()...)
	args = append(args, diskArgs()...)
	if len(s.cfg.Initdata) > 0 {
		args = append(args, "-drive", "file="+s.path("initdata.img")+",if=none,id=initdata,format=raw,readonly=on",
			"-device", "virtio-blk-pci,drive=initdata,serial="+initdata.DiskSerial)
	}
	return args, nil
}

// The user network's guest NIC, and the address where the forwarded ports
// of the host's loopback are (QEMU's own host address, 10.0.2.2, cannot
// carry guestfwd rules; restricted, it answers nothing).
const (
	userMAC   = "52:54:00:12:34:56"
	userAddr  = "10.0.2.15"
	userHost  = "10.0.2.100"
	firstTap  = 3 // the first tap queue's descriptor in QEMU (cmd.ExtraFiles)
	vhostNode = "/dev/vhost-net"
)

// nicArgs are the VM's NICs: one per tap of the pod network, then the
// restricted user network if asked for.
func (s *Sandbox) nicArgs() []string {
	var args []string
	vhost := "off"
	if _, err := os.Stat(vhostNode); err == nil && s.opts.Accel == "kvm" {
		vhost = "on" // the kernel moves the frames; TCG has no ioeventfd for it
	}
	if s.net != nil {
		for i, nic := range s.net.NICs {
			id := "pod" + strconv.Itoa(i)
			args = append(args, "-netdev", fmt.Sprintf("tap,id=%s,fd=%d,vhost=%s", id, firstTap+i, vhost),
				"-device", fmt.Sprintf("virtio-net-pci,netdev=%s,mac=%s,romfile=", id, nic.MAC))
		}
	}
	if s.opts.UserNetwork {
		// restrict=on: no connection to the host (10.0.2.2 is not its
		// loopback) or beyond, but the guestfwd rules.
		user := "user,id=user0,restrict=on"
		for _, p := range s.opts.UserForwards {
			user += fmt.Sprintf(",guestfwd=tcp:%s:%d-cmd:busybox nc 127.0.0.1 %d", userHost, p, p)
		}
		args = append(args, "-netdev", user, "-device", "virtio-net-pci,netdev=user0,mac="+userMAC+",romfile=")
	}
	return args
}

// GuestNetwork is what the guest's agent is told about its NICs once it
// answers: the pod network's interfaces, routes and neighbours, and the
// user network's address.
func (s *Sandbox) GuestNetwork() network.Config {
	var c network.Config
	if s.net != nil {
		c = s.net.Guest
	}
	if s.opts.UserNetwork {
		c.Interfaces = append(slices.Clone(c.Interfaces), &pb.Interface{Name: "eth" + strconv.Itoa(len(c.Interfaces)), HwAddr: userMAC,
			IPAddresses: []*pb.IPAddress{{Address: userAddr, Mask: "24"}}})
	}
	return c
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

func (s *Sandbox) launch() (err error) {
	if s.cfg.NetNS != "" {
		if s.net, err = network.Attach(s.cfg.NetNS); err != nil {
			return err
		}
		// QEMU holds the taps from here on: they go when it exits.
		defer s.net.CloseTaps()
		defer func() {
			if err != nil {
				s.net.Detach()
			}
		}()
	}
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
	if s.net != nil {
		for _, nic := range s.net.NICs {
			cmd.ExtraFiles = append(cmd.ExtraFiles, nic.Tap)
		}
	}
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
	if s.net != nil {
		return s.net.Detach()
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
