package network

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/cocoon-cc/cocoon/internal/tcpredirect"
)

// containerd's CRI port forwarding (kubectl port-forward) dials
// localhost:PORT inside the pod's namespace on the host. With the VM
// holding the pod's address, nothing listens there (the same holds for
// Kata). So the namespace's loopback is made to reach the VM: a nat rule
// redirects every TCP connection to 127.0.0.1 in the namespace to one
// listener of this process, which dials the pod's IP at the original port
// from the host's namespace, the way the node reaches a pod, and relays.
// Only processes that enter the pod's namespace on the host (containerd)
// can connect; the guest cannot, and reaches nothing of the host this way.

// forwarder is the loopback listener of one pod namespace.
type forwarder struct {
	l    net.Listener
	rule []string // the nat rule, for its removal
	to   net.IP
}

// forwardLoopback starts the forwarder; the caller runs it on a thread in
// the pod's namespace (the listener and the rule are made there), h is a
// handle there. The namespace's lo is brought up (CNI's loopback plugin
// has, under CRI).
func forwardLoopback(h *netlink.Handle, to net.IP) (*forwarder, error) {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("lo up: %w", err)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("loopback listener: %w", err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	f := &forwarder{l: l, to: to,
		rule: []string{"OUTPUT", "-o", "lo", "-p", "tcp", "-d", "127.0.0.1/32", "-j", "REDIRECT", "--to-ports", port}}
	if err := iptables("-A", f.rule); err != nil {
		l.Close()
		return nil, err
	}
	go f.serve()
	return f, nil
}

// iptables changes the nat table of the calling thread's namespace.
func iptables(op string, rule []string) error {
	args := append([]string{"-w", "5", "-t", "nat", op}, rule...)
	if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables %v: %w: %s", args, err, out)
	}
	return nil
}

// serve relays every connection until the listener closes; a relay ends
// with either of its sides (the VM's end goes with the VM).
func (f *forwarder) serve() {
	for {
		c, err := f.l.Accept()
		if err != nil {
			return
		}
		go f.relay(c.(*net.TCPConn))
	}
}

// relay joins a redirected connection to the pod's port it was meant for.
func (f *forwarder) relay(c *net.TCPConn) {
	defer c.Close()
	dst, err := tcpredirect.OriginalDst(c)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", net.JoinHostPort(f.to.String(), strconv.Itoa(int(dst.Port()))))
	if err != nil {
		return // the client sees the connection closed, as a refusal
	}
	tcpredirect.Splice(c, up.(*net.TCPConn))
}

// removeRule removes the nat rule; the caller runs on a thread in the
// namespace.
func (f *forwarder) removeRule() error { return iptables("-D", f.rule) }

// podIPv4 is the first IPv4 address of the pod's interfaces.
func (c Config) podIPv4() net.IP {
	for _, iface := range c.Interfaces {
		for _, a := range iface.IPAddresses {
			if ip := net.ParseIP(a.Address).To4(); ip != nil {
				return ip
			}
		}
	}
	return nil
}
