// Package network attaches a pod VM to the network namespace CNI prepared
// for the pod, as Kata's runtime does in its default "tcfilter" model: in
// that namespace a tap device is created for each of CNI's interfaces and
// tc ingress qdiscs with mirred redirects join the two both ways, so every
// frame reaching the interface goes to the VM and every frame of the VM
// leaves through the interface. The VM's NIC takes the interface's MAC
// address, and the guest is told the interface's addresses, routes and
// static neighbours (Kata's UpdateInterface, UpdateRoutes and
// AddARPNeighbors). The VMM runs outside the namespace: it gets the taps as
// open files, and the taps vanish when it exits. The namespace's loopback
// is forwarded to the VM for containerd's port forwarding (forward.go).
package network

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNetwork is wrapped by every error attaching or describing a pod
// network.
var ErrNetwork = errors.New("pod network")

// NIC is one VM NIC: a tap device's queue in the pod's namespace.
type NIC struct {
	// Tap is the open tap queue the VMM reads and writes frames on.
	Tap *os.File
	// TapName is the tap device's name in the pod's namespace.
	TapName string
	// Link is CNI's interface the tap is joined to (eth0).
	Link string
	// MAC is the interface's address, which the VM's NIC takes.
	MAC net.HardwareAddr
	MTU int
}

// Pod is a pod network namespace attached to a VM.
type Pod struct {
	nsPath string
	fwd    *forwarder // the namespace's loopback to the VM (forward.go)
	NICs   []NIC
	// Guest is what the guest's agent is told about the network.
	Guest Config
}

// tapName is the i-th tap device's name (Kata's is tap<i>_kata).
func tapName(i int) string { return fmt.Sprintf("tap%d_coco", i) }

// Attach creates, in the namespace at nsPath, a tap device per CNI
// interface (every non-loopback Ethernet link), joins each to its
// interface with tc redirects both ways and reads what the guest must be
// told. On error nothing is left in the namespace.
func Attach(nsPath string) (_ *Pod, err error) {
	if !filepath.IsAbs(nsPath) {
		return nil, fmt.Errorf("%w: namespace path %q is not absolute", ErrNetwork, nsPath)
	}
	p := &Pod{nsPath: nsPath}
	defer func() {
		if err != nil {
			p.CloseTaps()
			p.Detach()
		}
	}()
	err = p.inNamespace(func(h *netlink.Handle) error {
		links, err := h.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if !attachable(l) {
				continue
			}
			nic, err := attach(h, l, tapName(len(p.NICs)))
			if nic.Tap != nil {
				p.NICs = append(p.NICs, nic)
			}
			if err != nil {
				return err
			}
		}
		if p.Guest, err = describe(h, links); err != nil {
			return err
		}
		if ip := p.Guest.podIPv4(); ip != nil {
			p.fwd, err = forwardLoopback(h, ip)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNetwork, nsPath, err)
	}
	return p, nil
}

// attachable tells CNI's interfaces from loopback, our taps and devices
// without a MAC address (tunnels), which have no Ethernet to redirect.
func attachable(l netlink.Link) bool {
	a := l.Attrs()
	return a.Flags&net.FlagLoopback == 0 && l.Type() != "tuntap" && len(a.HardwareAddr) == 6
}

// attach creates the tap named tap for link and redirects both ways.
func attach(h *netlink.Handle, link netlink.Link, tap string) (NIC, error) {
	a := link.Attrs()
	nic := NIC{TapName: tap, Link: a.Name, MAC: a.HardwareAddr, MTU: a.MTU}
	// An ingress qdisc there is someone else's redirect: leave it alone.
	if qs, err := h.QdiscList(link); err != nil {
		return nic, err
	} else if slices.ContainsFunc(qs, func(q netlink.Qdisc) bool { return q.Type() == "ingress" }) {
		return nic, fmt.Errorf("%s already has an ingress qdisc", a.Name)
	}
	t := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: tap, MTU: a.MTU}, Mode: netlink.TUNTAP_MODE_TAP,
		Queues: 1, Flags: netlink.TUNTAP_MULTI_QUEUE_DEFAULTS | netlink.TUNTAP_VNET_HDR,
		// Not persistent: the device goes with the last open queue,
		// the VMM's, so a VM that dies leaves no tap behind.
		NonPersist: true}
	// The tap is made by opening /dev/net/tun, which creates it in the
	// calling thread's namespace: the caller runs on a thread in it.
	if err := netlink.LinkAdd(t); err != nil {
		return nic, fmt.Errorf("create tap %s: %w", tap, err)
	}
	nic.Tap = t.Fds[0]
	tl, err := h.LinkByName(tap)
	if err != nil {
		return nic, err
	}
	if err := h.LinkSetMTU(tl, a.MTU); err != nil {
		return nic, fmt.Errorf("tap %s mtu: %w", tap, err)
	}
	if err := h.LinkSetUp(tl); err != nil {
		return nic, fmt.Errorf("tap %s up: %w", tap, err)
	}
	if err := redirect(h, a.Index, tl.Attrs().Index); err != nil {
		return nic, fmt.Errorf("redirect %s to %s: %w", a.Name, tap, err)
	}
	if err := redirect(h, tl.Attrs().Index, a.Index); err != nil {
		return nic, fmt.Errorf("redirect %s to %s: %w", tap, a.Name, err)
	}
	return nic, nil
}

// ingress is the handle of a link's ingress qdisc (ffff:).
var ingress = netlink.MakeHandle(0xffff, 0)

// redirect sends every frame arriving at link from out of to's egress:
// an ingress qdisc with a u32 filter matching everything and a mirred
// egress redirect (Kata's filter; cls_matchall is not in every kernel).
func redirect(h *netlink.Handle, from, to int) error {
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: from, Parent: netlink.HANDLE_INGRESS, Handle: ingress}}
	if err := h.QdiscAdd(q); err != nil {
		return fmt.Errorf("ingress qdisc: %w", err)
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: from, Parent: ingress, Priority: 1, Protocol: unix.ETH_P_ALL},
		Actions: []netlink.Action{&netlink.MirredAction{
			ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_STOLEN},
			MirredAction: netlink.TCA_EGRESS_REDIR, Ifindex: to}},
	}
	if err := h.FilterAdd(f); err != nil {
		return fmt.Errorf("mirred filter: %w", err)
	}
	return nil
}

// CloseTaps closes this process's tap queues, once the VMM holds its own
// copies (or when no VM will).
func (p *Pod) CloseTaps() {
	for i := range p.NICs {
		if p.NICs[i].Tap != nil {
			p.NICs[i].Tap.Close()
			p.NICs[i].Tap = nil
		}
	}
}

// Detach removes what Attach added to the namespace: the CNI interfaces'
// ingress qdiscs (with their filters) and the taps, should a VMM still
// hold them. A namespace already gone (CNI's teardown ran) has nothing
// left to remove.
func (p *Pod) Detach() error {
	fwd := p.fwd
	p.fwd = nil
	if fwd != nil {
		fwd.l.Close()
	}
	err := p.inNamespace(func(h *netlink.Handle) error {
		var errs []error
		if fwd != nil {
			if err := fwd.removeRule(); err != nil {
				errs = append(errs, err)
			}
		}
		for _, nic := range p.NICs {
			if l, err := h.LinkByName(nic.Link); err == nil {
				q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_INGRESS, Handle: ingress}}
				if err := h.QdiscDel(q); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("%s ingress qdisc: %w", nic.Link, err))
				}
			}
			if l, err := h.LinkByName(nic.TapName); err == nil {
				if err := h.LinkDel(l); err != nil {
					errs = append(errs, fmt.Errorf("delete %s: %w", nic.TapName, err))
				}
			}
		}
		return errors.Join(errs...)
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: detach from %s: %w", ErrNetwork, p.nsPath, err)
	}
	return nil
}

// inNamespace runs f in the pod's namespace (InNamespace) with a netlink
// handle there.
func (p *Pod) inNamespace(f func(*netlink.Handle) error) error {
	return InNamespace(p.nsPath, func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		return f(h)
	})
}

// InNamespace runs f on an OS thread switched into the network namespace at
// nsPath: what f creates there (sockets, links, a child process started
// from the thread) belongs to it. The thread goes back to the scheduler
// only once switched back; if that fails it ends with the goroutine.
func InNamespace(nsPath string, f func() error) error {
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
