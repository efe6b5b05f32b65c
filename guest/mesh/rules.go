package mesh

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Mark is the socket mark of the proxy's own connections, which the rules
// leave alone (they would loop back into the proxy otherwise).
const Mark = 0x15c0

// Rules are the iptables-restore input (nat table) that redirects the
// pod's meshed traffic to the proxy: inbound connections to the served
// ports not arriving on loopback, and outbound connections to the
// outbound rules' destinations not made by the proxy itself.
func (c *Config) Rules() string {
	var b strings.Builder
	b.WriteString("*nat\n:COCO_MESH_IN - [0:0]\n:COCO_MESH_OUT - [0:0]\n")
	b.WriteString("-A PREROUTING -p tcp -j COCO_MESH_IN\n-A OUTPUT -p tcp -j COCO_MESH_OUT\n")
	for _, p := range c.InboundPorts {
		fmt.Fprintf(&b, "-A COCO_MESH_IN ! -i lo -p tcp --dport %d -j REDIRECT --to-ports %d\n", p, c.InboundPort)
	}
	fmt.Fprintf(&b, "-A COCO_MESH_OUT -m mark --mark %#x -j RETURN\n", Mark)
	for _, r := range c.Outbound {
		if len(r.Ports) == 0 {
			fmt.Fprintf(&b, "-A COCO_MESH_OUT -p tcp -d %s -j REDIRECT --to-ports %d\n", r.prefix, c.OutboundPort)
		}
		for _, p := range r.Ports {
			fmt.Fprintf(&b, "-A COCO_MESH_OUT -p tcp -d %s --dport %d -j REDIRECT --to-ports %d\n", r.prefix, p, c.OutboundPort)
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// Setup reads the mesh.toml of a TEE's initdata, which must have one, and
// with install loads its redirects: what the proxy needs before it serves.
func Setup(ctx context.Context, initdata []byte, install bool) (*Config, error) {
	c, ok, err := FromInitdata(initdata)
	if err != nil {
		return nil, fmt.Errorf("initdata's %s: %w", InitdataKey, err)
	}
	if !ok {
		return nil, fmt.Errorf("initdata has no %s", InitdataKey)
	}
	if install {
		if err := c.Install(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Install loads the rules into the network namespace with
// iptables-restore, leaving other chains as they are.
func (c *Config) Install(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(c.Rules())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mesh: iptables-restore: %w: %s", err, out)
	}
	return nil
}
