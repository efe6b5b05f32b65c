package network

import (
	"net"
	"strconv"

	"github.com/vishvananda/netlink"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// Config is the guest's network as Kata's agent calls carry it.
type Config struct {
	Interfaces []*pb.Interface
	Routes     []*pb.Route
	Neighbors  []*pb.ARPNeighbor
}

// describe reads the addresses, routes and static neighbours of the
// attachable links, under the links' names: the agent names the guest's
// NICs (found by MAC address) after them.
func describe(h *netlink.Handle, links []netlink.Link) (Config, error) {
	var c Config
	for _, l := range links {
		if !attachable(l) {
			continue
		}
		a := l.Attrs()
		iface := &pb.Interface{Device: a.Name, Name: a.Name, Mtu: uint64(a.MTU), HwAddr: a.HardwareAddr.String(),
			RawFlags: uint32(a.RawFlags)}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return c, err
		}
		for _, ad := range addrs {
			// The guest's kernel makes its own IPv6 link-local address.
			if ad.IP.IsLinkLocalUnicast() && ad.IP.To4() == nil {
				continue
			}
			ones, _ := ad.Mask.Size()
			iface.IPAddresses = append(iface.IPAddresses, &pb.IPAddress{Family: family(ad.IP), Address: ad.IP.String(),
				Mask: strconv.Itoa(ones)})
		}
		c.Interfaces = append(c.Interfaces, iface)
		routes, err := h.RouteList(l, netlink.FAMILY_ALL)
		if err != nil {
			return c, err
		}
		for _, r := range routes {
			if rt := route(r, a.Name); rt != nil {
				c.Routes = append(c.Routes, rt)
			}
		}
		neighs, err := h.NeighList(a.Index, netlink.FAMILY_ALL)
		if err != nil {
			return c, err
		}
		for _, n := range neighs {
			// Only what an administrator or a CNI plugin pinned: the
			// guest learns the rest by itself.
			if n.State&netlink.NUD_PERMANENT == 0 || n.IP == nil || len(n.HardwareAddr) == 0 {
				continue
			}
			c.Neighbors = append(c.Neighbors, &pb.ARPNeighbor{Device: a.Name, Lladdr: n.HardwareAddr.String(),
				State: int32(n.State), Flags: int32(n.Flags),
				ToIPAddress: &pb.IPAddress{Family: family(n.IP), Address: n.IP.String()}})
		}
	}
	return c, nil
}

// route is Kata's form of a route on device dev; IPv6 link-local and
// multicast routes are the guest kernel's own, and are left out.
func route(r netlink.Route, dev string) *pb.Route {
	rt := &pb.Route{Dest: "default", Device: dev, Scope: uint32(r.Scope), Flags: uint32(r.Flags), Mtu: uint32(r.MTU),
		Family: pb.IPFamily_v4}
	if r.Family == netlink.FAMILY_V6 {
		rt.Family = pb.IPFamily_v6
	}
	if r.Dst != nil {
		if ones, _ := r.Dst.Mask.Size(); ones > 0 {
			if r.Dst.IP.To4() == nil && (r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast()) {
				return nil
			}
			rt.Dest = r.Dst.String()
		}
	}
	if r.Gw != nil {
		rt.Gateway = r.Gw.String()
	}
	if r.Src != nil {
		rt.Source = r.Src.String()
	}
	return rt
}

func family(ip net.IP) pb.IPFamily {
	if ip.To4() == nil {
		return pb.IPFamily_v6
	}
	return pb.IPFamily_v4
}
