package agent

import (
	"context"
	"net"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// inNetns runs f on a thread in a new network namespace of its own, so the
// test changes no interface of the machine.
func inNetns(t *testing.T, f func()) {
	t.Helper()
	if unix.Geteuid() != 0 {
		t.Skip("SKIP: network namespaces need root (CI runs as root)")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // the thread dies with its namespace: never unlocked
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		f()
	}()
	<-done
}

func TestNetworkCalls(t *testing.T) {
	a := testAgent(t)
	ctx := context.Background()
	inNetns(t, func() {
		mac, _ := net.ParseMAC("02:42:0a:58:00:05")
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nic0", HardwareAddr: mac}, PeerName: "peer0"}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Errorf("veth: %v", err)
			return
		}
		iface, err := a.UpdateInterface(ctx, &pb.UpdateInterfaceRequest{Interface: &pb.Interface{
			Name: "eth0", HwAddr: mac.String(), Mtu: 1450, IPAddresses: []*pb.IPAddress{{Address: "10.88.0.5", Mask: "16"}}}})
		if err != nil {
			t.Errorf("UpdateInterface: %v", err)
			return
		}
		if iface.Name != "eth0" || iface.Mtu != 1450 || len(iface.IPAddresses) == 0 || iface.IPAddresses[0].Address != "10.88.0.5" {
			t.Errorf("interface: %v", iface)
		}
		routes, err := a.UpdateRoutes(ctx, &pb.UpdateRoutesRequest{Routes: &pb.Routes{Routes: []*pb.Route{
			{Dest: "default", Gateway: "10.88.0.1", Device: "eth0"},
			{Dest: "10.96.0.0/12", Gateway: "10.88.0.1", Device: "eth0"},
		}}})
		if err != nil {
			t.Errorf("UpdateRoutes: %v", err)
			return
		}
		var sawDefault bool
		for _, r := range routes.Routes {
			sawDefault = sawDefault || r.Dest == "default" && r.Gateway == "10.88.0.1" && r.Device == "eth0"
		}
		if !sawDefault {
			t.Errorf("routes: %v", routes.Routes)
		}
		if _, err := a.AddARPNeighbors(ctx, &pb.AddARPNeighborsRequest{Neighbors: &pb.ARPNeighbors{ARPNeighbors: []*pb.ARPNeighbor{{
			ToIPAddress: &pb.IPAddress{Address: "10.88.0.1"}, Device: "eth0", Lladdr: "02:42:0a:58:00:01"}}}}); err != nil {
			t.Errorf("AddARPNeighbors: %v", err)
		}
		// Bad input changes nothing and says what is wrong.
		for name, req := range map[string]*pb.UpdateInterfaceRequest{
			"no interface": {},
			"bad mac":      {Interface: &pb.Interface{HwAddr: "zz"}},
			"unknown mac":  {Interface: &pb.Interface{HwAddr: "02:00:00:00:00:99"}},
			"bad mask":     {Interface: &pb.Interface{HwAddr: mac.String(), IPAddresses: []*pb.IPAddress{{Address: "10.0.0.1", Mask: "33"}}}},
			"bad address":  {Interface: &pb.Interface{HwAddr: mac.String(), IPAddresses: []*pb.IPAddress{{Address: "x", Mask: "8"}}}},
		} {
			if _, err := a.UpdateInterface(ctx, req); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
		if _, err := a.UpdateRoutes(ctx, &pb.UpdateRoutesRequest{Routes: &pb.Routes{Routes: []*pb.Route{{Dest: "nonsense", Device: "eth0"}}}}); err == nil {
			t.Error("bad route accepted")
		}
		after, _ := a.ListRoutes(ctx, &pb.ListRoutesRequest{})
		if len(after.Routes) != len(routes.Routes) {
			t.Errorf("a refused update changed the routes: %v, was %v", after.Routes, routes.Routes)
		}
	})
}
