package agent

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// The pod's network is the runtime's to describe, as in Kata: the shim reads
// the interfaces, routes and neighbours CNI gave the pod's network namespace
// and the agent applies them to the guest's NICs, matched by MAC address.
// The network is untrusted either way; what the workload sends over it is
// its own to protect.

// UpdateInterface configures the guest NIC whose MAC address the request
// names: MTU, addresses, name, and brings it up.
func (a *Agent) UpdateInterface(ctx context.Context, r *pb.UpdateInterfaceRequest) (*pb.Interface, error) {
	link, err := linkFor(r.GetInterface())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := configureLink(link, r.Interface); err != nil {
		return nil, toStatus(err)
	}
	link, err = netlink.LinkByIndex(link.Attrs().Index)
	if err != nil {
		return nil, toStatus(err)
	}
	return interfaceOf(link)
}

func linkFor(iface *pb.Interface) (netlink.Link, error) {
	if iface == nil {
		return nil, fmt.Errorf("%w: no interface", ErrInvalidArgument)
	}
	mac, err := net.ParseMAC(iface.HwAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: interface %q: hardware address %q: %v", ErrInvalidArgument, iface.Name, iface.HwAddr, err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if l.Attrs().HardwareAddr.String() == mac.String() {
			return l, nil
		}
	}
	return nil, fmt.Errorf("%w: no interface with hardware address %s", ErrNotFound, mac)
}

func configureLink(link netlink.Link, iface *pb.Interface) error {
	addrs := make([]*netlink.Addr, 0, len(iface.IPAddresses))
	for _, ip := range iface.IPAddresses {
		addr, err := parseAddr(ip)
		if err != nil {
			return err
		}
		addrs = append(addrs, addr)
	}
	if err := netlink.LinkSetDown(link); err != nil {
		return fmt.Errorf("interface %s down: %w", link.Attrs().Name, err)
	}
	if iface.Mtu > 0 {
		if err := netlink.LinkSetMTU(link, int(iface.Mtu)); err != nil {
			return fmt.Errorf("%w: interface %s mtu %d: %v", ErrInvalidArgument, link.Attrs().Name, iface.Mtu, err)
		}
	}
	if iface.Name != "" && iface.Name != link.Attrs().Name {
		if err := netlink.LinkSetName(link, iface.Name); err != nil {
			return fmt.Errorf("%w: rename interface %s to %q: %v", ErrInvalidArgument, link.Attrs().Name, iface.Name, err)
		}
	}
	old, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for i := range old {
		if old[i].IP.IsLinkLocalUnicast() {
			continue
		}
		if err := netlink.AddrDel(link, &old[i]); err != nil {
			return fmt.Errorf("interface %s: remove %s: %w", link.Attrs().Name, old[i].IPNet, err)
		}
	}
	for _, addr := range addrs {
		if err := netlink.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("interface %s: add %s: %w", link.Attrs().Name, addr.IPNet, err)
		}
	}
	return netlink.LinkSetUp(link)
}

// parseAddr reads Kata's address: an IP and its prefix length as a decimal.
func parseAddr(ip *pb.IPAddress) (*netlink.Addr, error) {
	addr := net.ParseIP(ip.GetAddress())
	bits := 32
	if addr.To4() == nil {
		bits = 128
	}
	ones, err := strconv.Atoi(ip.GetMask())
	if addr == nil || err != nil || ones < 0 || ones > bits {
		return nil, fmt.Errorf("%w: address %q/%q", ErrInvalidArgument, ip.GetAddress(), ip.GetMask())
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: addr, Mask: net.CIDRMask(ones, bits)}}, nil
}

// UpdateRoutes replaces the routes of the guest's NICs (not loopback's) by
// the request's, device routes first so that gateways are reachable.
func (a *Agent) UpdateRoutes(ctx context.Context, r *pb.UpdateRoutesRequest) (*pb.Routes, error) {
	want := make([]*netlink.Route, 0, len(r.GetRoutes().GetRoutes()))
	for _, rt := range r.GetRoutes().GetRoutes() {
		nr, err := parseRoute(rt)
		if err != nil {
			return nil, toStatus(err)
		}
		want = append(want, nr)
	}
	if err := flushRoutes(); err != nil {
		return nil, toStatus(err)
	}
	for _, gw := range []bool{false, true} {
		for _, nr := range want {
			if (nr.Gw != nil) != gw {
				continue
			}
			if err := netlink.RouteReplace(nr); err != nil {
				return nil, toStatus(fmt.Errorf("route %s: %w", nr, err))
			}
		}
	}
	return a.ListRoutes(ctx, &pb.ListRoutesRequest{})
}

func parseRoute(rt *pb.Route) (*netlink.Route, error) {
	link, err := netlink.LinkByName(rt.Device)
	if err != nil {
		return nil, fmt.Errorf("%w: route %q: device %q: %v", ErrNotFound, rt.Dest, rt.Device, err)
	}
	nr := &netlink.Route{LinkIndex: link.Attrs().Index, Scope: netlink.Scope(rt.Scope), Flags: int(rt.Flags), MTU: int(rt.Mtu)}
	if rt.Dest != "" && rt.Dest != "default" {
		_, dst, err := net.ParseCIDR(rt.Dest)
		if err != nil {
			return nil, fmt.Errorf("%w: route destination %q", ErrInvalidArgument, rt.Dest)
		}
		nr.Dst = dst
	}
	for _, f := range []struct {
		s   string
		dst *net.IP
	}{{rt.Gateway, &nr.Gw}, {rt.Source, &nr.Src}} {
		if f.s == "" {
			continue
		}
		if *f.dst = net.ParseIP(f.s); *f.dst == nil {
			return nil, fmt.Errorf("%w: route %q: address %q", ErrInvalidArgument, rt.Dest, f.s)
		}
	}
	return nr, nil
}

// flushRoutes removes the main table's routes of every NIC but loopback.
func flushRoutes() error {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for i := range routes {
		link, err := netlink.LinkByIndex(routes[i].LinkIndex)
		if err != nil || link.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		if routes[i].Protocol == unix.RTPROT_KERNEL {
			continue // the kernel's own prefix routes go with their addresses
		}
		if err := netlink.RouteDel(&routes[i]); err != nil {
			return fmt.Errorf("remove route %s: %w", routes[i], err)
		}
	}
	return nil
}

// ListInterfaces reports the guest's NICs.
func (a *Agent) ListInterfaces(ctx context.Context, _ *pb.ListInterfacesRequest) (*pb.Interfaces, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.Interfaces{}
	for _, l := range links {
		iface, err := interfaceOf(l)
		if err != nil {
			return nil, err
		}
		out.Interfaces = append(out.Interfaces, iface)
	}
	return out, nil
}

func interfaceOf(l netlink.Link) (*pb.Interface, error) {
	attrs := l.Attrs()
	iface := &pb.Interface{Device: attrs.Name, Name: attrs.Name, Mtu: uint64(attrs.MTU), HwAddr: attrs.HardwareAddr.String(),
		Type: l.Type(), RawFlags: attrs.RawFlags}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, toStatus(err)
	}
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		family := pb.IPFamily_v4
		if a.IP.To4() == nil {
			family = pb.IPFamily_v6
		}
		iface.IPAddresses = append(iface.IPAddresses, &pb.IPAddress{Family: family, Address: a.IP.String(), Mask: strconv.Itoa(ones)})
	}
	return iface, nil
}

// ListRoutes reports the guest's main routing table.
func (a *Agent) ListRoutes(ctx context.Context, _ *pb.ListRoutesRequest) (*pb.Routes, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.Routes{}
	for _, r := range routes {
		rt := &pb.Route{Dest: "default", Scope: uint32(r.Scope), Flags: uint32(r.Flags), Mtu: uint32(r.MTU)}
		if !isDefault(r.Dst) {
			rt.Dest = r.Dst.String()
		}
		if r.Gw != nil {
			rt.Gateway = r.Gw.String()
		}
		if r.Src != nil {
			rt.Source = r.Src.String()
		}
		if r.Family == netlink.FAMILY_V6 {
			rt.Family = pb.IPFamily_v6
		}
		if link, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			rt.Device = link.Attrs().Name
		}
		out.Routes = append(out.Routes, rt)
	}
	return out, nil
}

// isDefault tells a default route: no destination, or 0.0.0.0/0 (::/0).
func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

// AddARPNeighbors adds static neighbours (CNI plugins that answer ARP on the
// host side, such as a gateway without an address, rely on them).
func (a *Agent) AddARPNeighbors(ctx context.Context, r *pb.AddARPNeighborsRequest) (*emptypb.Empty, error) {
	for _, n := range r.GetNeighbors().GetARPNeighbors() {
		neigh, err := parseNeighbor(n)
		if err != nil {
			return nil, toStatus(err)
		}
		if err := netlink.NeighSet(neigh); err != nil {
			return nil, toStatus(fmt.Errorf("neighbour %s: %w", neigh.IP, err))
		}
	}
	return empty(), nil
}

func parseNeighbor(n *pb.ARPNeighbor) (*netlink.Neigh, error) {
	ip := net.ParseIP(n.GetToIPAddress().GetAddress())
	mac, err := net.ParseMAC(n.Lladdr)
	if ip == nil || err != nil {
		return nil, fmt.Errorf("%w: neighbour %q at %q", ErrInvalidArgument, n.GetToIPAddress().GetAddress(), n.Lladdr)
	}
	link, err := netlink.LinkByName(n.Device)
	if err != nil {
		return nil, fmt.Errorf("%w: neighbour %s: device %q: %v", ErrNotFound, ip, n.Device, err)
	}
	state := int(n.State)
	if state == 0 {
		state = netlink.NUD_PERMANENT
	}
	family := netlink.FAMILY_V4
	if ip.To4() == nil {
		family = netlink.FAMILY_V6
	}
	return &netlink.Neigh{LinkIndex: link.Attrs().Index, Family: family, State: state, Flags: int(n.Flags), IP: ip, HardwareAddr: mac}, nil
}
