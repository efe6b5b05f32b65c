package shim

import (
	"context"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
	"github.com/cocoon-cc/cocoon/runtime/network"
)

// podNetNS is the network namespace CNI prepared for the pod, which CRI
// names in the sandbox's spec; empty for a pod on the host's network or a
// container ctr runs in a namespace of its own (no network).
func podNetNS(spec *specs.Spec) string {
	if spec.Linux == nil {
		return ""
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// guestNetworker is a sandbox whose guest has NICs the runtime describes
// (a VM attached to the pod network).
type guestNetworker interface {
	GuestNetwork() network.Config
}

// configureNetwork tells the agent what the pod network is, as Kata's
// runtime does before it creates the sandbox: each NIC (found by its MAC
// address) gets its name, MTU and addresses and comes up, then the
// routes and the static neighbours follow.
func configureNetwork(ctx context.Context, g guestNetworker, agent pb.AgentServiceService) error {
	c := g.GuestNetwork()
	for _, iface := range c.Interfaces {
		if _, err := agent.UpdateInterface(ctx, &pb.UpdateInterfaceRequest{Interface: iface}); err != nil {
			return agentError("configure interface "+iface.Name, err)
		}
	}
	if len(c.Routes) > 0 {
		if _, err := agent.UpdateRoutes(ctx, &pb.UpdateRoutesRequest{Routes: &pb.Routes{Routes: c.Routes}}); err != nil {
			return agentError("configure routes", err)
		}
	}
	if len(c.Neighbors) > 0 {
		if _, err := agent.AddARPNeighbors(ctx, &pb.AddARPNeighborsRequest{Neighbors: &pb.ARPNeighbors{ARPNeighbors: c.Neighbors}}); err != nil {
			return agentError("configure neighbours", err)
		}
	}
	return nil
}
