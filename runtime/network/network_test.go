package network

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cocoon-cc/cocoon/internal/testutil/nettest"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

const (
	podIP  = "10.213.7.5"
	peerIP = "10.213.7.1"
	podMAC = "02:42:0a:d5:07:05"
)

// podAndPeer is CNI's work done by hand: a pod namespace whose eth0 (a
// veth with an address, a route and a static neighbour) pairs with an
// interface in a peer namespace standing for the node.
func podAndPeer(t *testing.T) (pod, peer string) {
	pod, peer = nettest.Namespace(t), nettest.Namespace(t)
	pn, qn := strings.TrimPrefix(pod, "/run/netns/"), strings.TrimPrefix(peer, "/run/netns/")
	nettest.Run(t, "ip", "-n", qn, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", pn)
	nettest.Run(t, "ip", "-n", pn, "link", "set", "eth0", "address", podMAC, "mtu", "1400", "up")
	nettest.Run(t, "ip", "-n", pn, "addr", "add", podIP+"/24", "dev", "eth0")
	nettest.Run(t, "ip", "-n", pn, "route", "add", "10.96.0.0/12", "via", peerIP)
	nettest.Run(t, "ip", "-n", pn, "neigh", "add", "10.213.7.9", "lladdr", "02:00:00:00:00:09", "dev", "eth0", "nud", "permanent")
	nettest.Run(t, "ip", "-n", qn, "link", "set", "veth0", "mtu", "1400", "up")
	nettest.Run(t, "ip", "-n", qn, "addr", "add", peerIP+"/24", "dev", "veth0")
	return pod, peer
}

func TestAttach(t *testing.T) {
	pod, peer := podAndPeer(t)
	p, err := Attach(pod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.CloseTaps(); p.Detach() })
	if len(p.NICs) != 1 || p.NICs[0].Link != "eth0" || p.NICs[0].MAC.String() != podMAC || p.NICs[0].MTU != 1400 {
		t.Fatalf("NICs %+v", p.NICs)
	}
	g := p.Guest
	if len(g.Interfaces) != 1 || g.Interfaces[0].Name != "eth0" || g.Interfaces[0].HwAddr != podMAC ||
		len(g.Interfaces[0].IPAddresses) != 1 || g.Interfaces[0].IPAddresses[0].Address != podIP || g.Interfaces[0].IPAddresses[0].Mask != "24" {
		t.Errorf("interfaces %v", g.Interfaces)
	}
	if !hasRoute(g.Routes, "10.96.0.0/12", peerIP) || !hasRoute(g.Routes, "10.213.7.0/24", "") {
		t.Errorf("routes %v", g.Routes)
	}
	if len(g.Neighbors) != 1 || g.Neighbors[0].ToIPAddress.Address != "10.213.7.9" || g.Neighbors[0].Lladdr != "02:00:00:00:00:09" {
		t.Errorf("neighbours %v", g.Neighbors)
	}
	// The redirects, both ways, with the kernel's real traffic: the peer
	// asks for the pod's address; the request comes out of the tap; an
	// answer written to the tap reaches the peer, which then sends its
	// datagram to the VM's MAC, through the tap again.
	tap := p.NICs[0].Tap
	sent := make(chan error, 1)
	go func() {
		sent <- (&Pod{nsPath: peer}).inNamespace(func(*netlink.Handle) error {
			c, err := net.Dial("udp4", podIP+":9")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("to the vm"))
			return err
		})
	}()
	req := readFrame(t, tap, 0x0806)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	peerMAC := net.HardwareAddr(req[6:12])
	if !bytes.Equal(req[38:42], net.ParseIP(podIP).To4()) {
		t.Fatalf("ARP request for %v, want %s", net.IP(req[38:42]), podIP)
	}
	writeFrame(t, tap, arpReply(p.NICs[0].MAC, peerMAC))
	udp := readFrame(t, tap, 0x0800)
	if !bytes.Equal(udp[0:6], p.NICs[0].MAC) || !bytes.Contains(udp, []byte("to the vm")) {
		t.Fatalf("datagram frame % x", udp)
	}

	// The VMM's exit (here: closing the last queue) removes the tap;
	// Detach removes the redirect from eth0.
	p.CloseTaps()
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	p.inNamespace(func(h *netlink.Handle) error {
		if _, err := h.LinkByName("tap0_coco"); err == nil {
			t.Error("tap left after its queue closed")
		}
		eth, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		qs, err := h.QdiscList(eth)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range qs {
			if q.Type() == "ingress" {
				t.Errorf("ingress qdisc left on eth0: %v", q)
			}
		}
		return nil
	})
}

func hasRoute(rs []*pb.Route, dest, gw string) bool {
	for _, r := range rs {
		if r.Dest == dest && r.Gateway == gw && r.Device == "eth0" {
			return true
		}
	}
	return false
}

// vnetHdr is the virtio-net header before each frame on a tap opened with
// IFF_VNET_HDR, as QEMU opens it.
const vnetHdr = 10

// readFrame returns the next frame of the given EtherType read from tap.
func readFrame(t *testing.T, tap *os.File, etherType uint16) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	tap.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, err := tap.Read(buf)
		if err != nil {
			t.Fatalf("read tap: %v", err)
		}
		f := buf[vnetHdr:n]
		if len(f) >= 42 && binary.BigEndian.Uint16(f[12:14]) == etherType {
			return append([]byte(nil), f...)
		}
	}
}

func writeFrame(t *testing.T, tap *os.File, frame []byte) {
	t.Helper()
	if _, err := tap.Write(append(make([]byte, vnetHdr), frame...)); err != nil {
		t.Fatalf("write tap: %v", err)
	}
}

// arpReply says, from the VM, that the pod's address is at mac.
func arpReply(mac, to net.HardwareAddr) []byte {
	f := append(append([]byte{}, to...), mac...)
	f = append(f, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2)
	f = append(append(f, mac...), net.ParseIP(podIP).To4()...)
	return append(append(f, to...), net.ParseIP(peerIP).To4()...)
}

func TestAttachErrors(t *testing.T) {
	if _, err := Attach("relative/ns"); !errors.Is(err, ErrNetwork) {
		t.Errorf("relative path: %v", err)
	}
	nettest.RequireRoot(t)
	if _, err := Attach("/run/netns/no-such-namespace"); !errors.Is(err, ErrNetwork) || !errors.Is(err, unix.ENOENT) {
		t.Errorf("missing namespace: %v", err)
	}
	// A namespace whose interface already has an ingress qdisc (another
	// runtime's): Attach fails and leaves the namespace as it was.
	pod, _ := podAndPeer(t)
	nettest.Run(t, "tc", "-n", strings.TrimPrefix(pod, "/run/netns/"), "qdisc", "add", "dev", "eth0", "ingress")
	if _, err := Attach(pod); !errors.Is(err, ErrNetwork) {
		t.Fatalf("Attach over an ingress qdisc: %v", err)
	}
	(&Pod{nsPath: pod}).inNamespace(func(h *netlink.Handle) error {
		if _, err := h.LinkByName("tap0_coco"); err == nil {
			t.Error("tap left after a failed Attach")
		}
		eth, _ := h.LinkByName("eth0")
		if qs, _ := h.QdiscList(eth); len(qs) == 0 || !slices.ContainsFunc(qs, func(q netlink.Qdisc) bool { return q.Type() == "ingress" }) {
			t.Errorf("the namespace's own ingress qdisc was removed: %v", qs)
		}
		return nil
	})
}

// TestForwardLoopback: a connection to 127.0.0.1:PORT in the pod's
// namespace (containerd's port forwarding) reaches PORT at the forwarder's
// target from this process's namespace; here the target is a listener on
// this namespace's loopback, standing for the VM at the pod's IP.
func TestForwardLoopback(t *testing.T) {
	ns := nettest.Namespace(t)
	pod := &Pod{nsPath: ns}
	target, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	port := target.Addr().(*net.TCPAddr).Port
	dialInPod := func() (net.Conn, error) {
		var c net.Conn
		err := pod.inNamespace(func(*netlink.Handle) error {
			var err error
			c, err = net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
			return err
		})
		return c, err
	}
	pod.inNamespace(func(h *netlink.Handle) error {
		pod.fwd, err = forwardLoopback(h, net.ParseIP("127.0.0.1"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialInPod()
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("through the forwarder"))
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(b) != "through the forwarder" {
		t.Fatalf("echo %q %v", b, err)
	}
	if err := pod.Detach(); err != nil {
		t.Fatal(err)
	}
	if c, err := dialInPod(); err == nil {
		c.Close()
		t.Fatal("the pod's loopback still forwards after Detach")
	}
	var out []byte
	pod.inNamespace(func(*netlink.Handle) error {
		out, _ = exec.Command("iptables-save", "-t", "nat").CombinedOutput()
		return nil
	})
	if strings.Contains(string(out), "REDIRECT") {
		t.Errorf("nat rule left:\n%s", out)
	}
}
