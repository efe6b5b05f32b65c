// Package mesh is the pod's attested mTLS mesh in the guest: TCP traffic
// that initdata's mesh.toml selects is redirected by netfilter to a proxy
// that wraps it in mutual TLS with the pod's X.509-SVID and lets only the
// SPIFFE IDs mesh.toml allows talk to the pod. The rules come from
// initdata, which the hardware measures, so the host cannot change who may
// talk to whom; applications keep speaking plain TCP.
package mesh

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cocoon-cc/cocoon/initdata"
)

// InitdataKey is the initdata entry holding the mesh's rules.
const InitdataKey = "mesh.toml"

// Default ports of the proxy's listeners (Istio's, so an owner's tooling
// recognises them).
const (
	DefaultOutboundPort = 15001
	DefaultInboundPort  = 15006
)

const maxConfig = 64 << 10

// ErrBadConfig: mesh.toml cannot be used.
var ErrBadConfig = errors.New("mesh: bad mesh.toml")

// Config is mesh.toml.
//
//	allow = ["spiffe://example.org/ns/shop/web"]  # peer IDs, both ways
//	inbound_ports = [8080]                        # the pod's served ports
//	[[outbound]]                                  # destinations meshed
//	cidr = "10.96.0.0/12"
//	ports = [80]                                  # none: every port
//	allow = ["spiffe://example.org/ns/shop/web"]  # none: the global allow
//	[[federate]]                                  # peers of another trust domain
//	trust_domain = "cluster.local"
//	bundle = """-----BEGIN CERTIFICATE-----..."""  # its roots, pinned
type Config struct {
	Allow        []string     `toml:"allow"`
	InboundPorts []uint16     `toml:"inbound_ports"`
	Outbound     []Rule       `toml:"outbound"`
	OutboundPort uint16       `toml:"outbound_port"`
	InboundPort  uint16       `toml:"inbound_port"`
	Federate     []Federation `toml:"federate"`

	allowed   []spiffeid.ID
	federated *x509bundle.Set
}

// Federation pins the X.509 roots (PEM) of another trust domain, whose
// peers (an Istio mesh's workloads) the rules may then allow. The pod's
// own trust domain is always its KBS's: a federation naming it is unused.
type Federation struct {
	TrustDomain string `toml:"trust_domain"`
	Bundle      string `toml:"bundle"`
}

// Rule selects outbound destinations: a CIDR and optionally ports. Its
// Allow, when set, replaces the global list for them: a Service's
// ClusterIP is routed by the host (kube-proxy's DNAT), so only the peer's
// proven ID, never the address, says which workload serves it.
type Rule struct {
	CIDR  string   `toml:"cidr"`
	Ports []uint16 `toml:"ports"`
	Allow []string `toml:"allow"`

	prefix  netip.Prefix
	allowed []spiffeid.ID
}

// ParseConfig reads and checks mesh.toml.
func ParseConfig(text string) (*Config, error) {
	var c Config
	if err := initdata.DecodeEntry(text, maxConfig, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	if len(c.Allow) == 0 {
		return nil, fmt.Errorf("%w: allow names no SPIFFE ID (nothing could connect)", ErrBadConfig)
	}
	var err error
	if c.allowed, err = parseIDs(c.Allow); err != nil {
		return nil, err
	}
	for i := range c.Outbound {
		r := &c.Outbound[i]
		p, err := netip.ParsePrefix(r.CIDR)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("%w: outbound cidr %q: not an IPv4 prefix", ErrBadConfig, r.CIDR)
		}
		r.prefix = p.Masked()
		if slices.Contains(r.Ports, 0) {
			return nil, fmt.Errorf("%w: outbound port 0", ErrBadConfig)
		}
		if r.allowed, err = parseIDs(r.Allow); err != nil {
			return nil, err
		}
	}
	if slices.Contains(c.InboundPorts, 0) {
		return nil, fmt.Errorf("%w: inbound port 0", ErrBadConfig)
	}
	if c.federated, err = parseFederation(c.Federate); err != nil {
		return nil, err
	}
	if c.OutboundPort == 0 {
		c.OutboundPort = DefaultOutboundPort
	}
	if c.InboundPort == 0 {
		c.InboundPort = DefaultInboundPort
	}
	if c.OutboundPort == c.InboundPort {
		return nil, fmt.Errorf("%w: outbound_port and inbound_port are both %d", ErrBadConfig, c.InboundPort)
	}
	return &c, nil
}

// parseIDs reads an allow list.
func parseIDs(list []string) ([]spiffeid.ID, error) {
	var ids []spiffeid.ID
	for _, s := range list {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: allow %q: %v", ErrBadConfig, s, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// parseFederation reads the pinned bundles, one per trust domain.
func parseFederation(fs []Federation) (*x509bundle.Set, error) {
	set := x509bundle.NewSet()
	for _, f := range fs {
		td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("%w: federate trust_domain %q: %v", ErrBadConfig, f.TrustDomain, err)
		}
		if set.Has(td) {
			return nil, fmt.Errorf("%w: federate %s twice", ErrBadConfig, td)
		}
		b, err := x509bundle.Parse(td, []byte(f.Bundle))
		if err != nil || b.Empty() {
			return nil, fmt.Errorf("%w: federate %s: no PEM certificate in bundle: %v", ErrBadConfig, td, err)
		}
		set.Add(b)
	}
	return set, nil
}

// Allowed are the peer SPIFFE IDs the mesh accepts.
func (c *Config) Allowed() []spiffeid.ID { return c.allowed }

// match is the index of dst's first matching outbound rule, or -1.
func (c *Config) match(dst netip.AddrPort) int {
	for i, r := range c.Outbound {
		if r.prefix.Contains(dst.Addr()) && (len(r.Ports) == 0 || slices.Contains(r.Ports, dst.Port())) {
			return i
		}
	}
	return -1
}

// ruleAllowed are the peer IDs of outbound rule i.
func (c *Config) ruleAllowed(i int) []spiffeid.ID {
	if len(c.Outbound[i].allowed) > 0 {
		return c.Outbound[i].allowed
	}
	return c.allowed
}

// inbound reports whether port is one of the pod's meshed served ports.
func (c *Config) inbound(port uint16) bool { return slices.Contains(c.InboundPorts, port) }

// FromInitdata is the mesh.toml of an initdata document; ok is false
// when it has none.
func FromInitdata(body []byte) (c *Config, ok bool, err error) {
	return initdata.FromEntry(body, InitdataKey, ParseConfig)
}
