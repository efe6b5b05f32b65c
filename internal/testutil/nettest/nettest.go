// Package nettest gives tests network parts of their own: a free private
// subnet, a bridge, a network namespace with a veth into it. Everything is
// removed when the test ends, and nothing routes off the machine.
package nettest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequireRoot skips the test loudly when it cannot change the network.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: network namespaces and links need root (CI runs as root)")
	}
}

// Run runs a command (ip, tc) and fails the test on error.
func Run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Subnet is a /24 in 10.200.0.0/13 that no address or route of the
// machine overlaps (tests of other packages pick theirs at random too).
func Subnet(t testing.TB) *net.IPNet {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		n, _ := rand.Int(rand.Reader, big.NewInt(8*256))
		sub := &net.IPNet{IP: net.IPv4(10, byte(200+n.Int64()/256), byte(n.Int64()%256), 0).To4(), Mask: net.CIDRMask(24, 32)}
		used := false
		for _, r := range routes {
			if r.Dst == nil {
				continue // the default route
			}
			if ones, _ := r.Dst.Mask.Size(); ones > 0 && (r.Dst.Contains(sub.IP) || sub.Contains(r.Dst.IP)) {
				used = true
			}
		}
		for _, a := range addrs {
			used = used || sub.Contains(a.IP)
		}
		if !used {
			return sub
		}
	}
	t.Fatal("no free test subnet in 10.200.0.0/13")
	return nil
}

// Host returns the subnet's i-th address.
func Host(sub *net.IPNet, i int) net.IP {
	ip := sub.IP.To4()
	return net.IPv4(ip[0], ip[1], ip[2], ip[3]+byte(i)).To4()
}

// name is a link or namespace name unique to this process.
func name(prefix string) string {
	b := make([]byte, 3)
	rand.Read(b)
	return fmt.Sprintf("%s%x", prefix, b)
}

// Bridge creates a bridge holding the subnet's first address (a CNI
// bridge's gateway) and returns its name and that address.
func Bridge(t testing.TB, sub *net.IPNet) (string, net.IP) {
	t.Helper()
	RequireRoot(t)
	br, gw := name("ccbr"), Host(sub, 1)
	Run(t, "ip", "link", "add", br, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", br).Run() })
	Run(t, "ip", "addr", "add", fmt.Sprintf("%s/24", gw), "dev", br)
	Run(t, "ip", "link", "set", br, "up")
	return br, gw
}

// Namespace creates a network namespace and returns its path.
func Namespace(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	ns := name("cocoon-")
	Run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	return "/run/netns/" + ns
}

// Pod is CNI's work done by hand: a namespace whose eth0 is a veth to the
// host with the subnet's second address; the host's end has the first.
func Pod(t testing.TB) (nsPath string, host, pod net.IP) {
	t.Helper()
	sub := Subnet(t)
	nsPath = Namespace(t)
	ns := strings.TrimPrefix(nsPath, "/run/netns/")
	veth := name("ccv")
	host, pod = Host(sub, 1), Host(sub, 2)
	Run(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	t.Cleanup(func() { exec.Command("ip", "link", "del", veth).Run() })
	Run(t, "ip", "addr", "add", host.String()+"/24", "dev", veth)
	Run(t, "ip", "link", "set", veth, "up")
	Run(t, "ip", "-n", ns, "addr", "add", pod.String()+"/24", "dev", "eth0")
	Run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	return nsPath, host, pod
}

// LoopbackService listens on the host's 127.0.0.1, as etcd or a kubelet's
// read-only port do, and counts the connections it accepts: sandboxes
// must never reach it. It returns its port and the count so far.
func LoopbackService(t testing.TB) (port int, reached func() int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port, n.Load
}

// Capture records every frame crossing the host's end of a pod's
// interface (AF_PACKET), as the host could; the returned function stops
// and returns what was seen.
func Capture(t *testing.T, ifname string) func() []byte {
	t.Helper()
	return CaptureIn(t, "", ifname)
}

// CaptureIn is Capture of an interface in the network namespace at nsPath
// (a Kubernetes node's, where its pods' host-side veths are); "" is the
// test's own.
func CaptureIn(t *testing.T, nsPath, ifname string) func() []byte {
	t.Helper()
	fd, err := packetSocket(nsPath, ifname)
	if err != nil {
		t.Fatalf("capture on %s: %v", ifname, err)
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	var mu sync.Mutex
	var seen bytes.Buffer
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 65536)
		for {
			select {
			case <-done:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err == nil {
				mu.Lock()
				seen.Write(buf[:n])
				mu.Unlock()
			}
		}
	}()
	var once sync.Once
	stop := func() []byte {
		once.Do(func() { close(done); <-stopped; unix.Close(fd) })
		mu.Lock()
		defer mu.Unlock()
		return seen.Bytes()
	}
	t.Cleanup(func() { stop() })
	return stop
}

// packetSocket opens an AF_PACKET socket bound to ifname, in the network
// namespace at nsPath when it is not "" (the socket stays in it).
func packetSocket(nsPath, ifname string) (int, error) {
	if nsPath != "" {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return -1, err
		}
		defer orig.Close()
		h, err := netns.GetFromPath(nsPath)
		if err != nil {
			return -1, err
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			return -1, err
		}
		defer netns.Set(orig)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
