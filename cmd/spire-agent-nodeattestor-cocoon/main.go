// Command spire-agent-nodeattestor-cocoon is the SPIRE agent's
// NodeAttestor plugin "cocoon": from inside a TEE it attests to a Cocoon
// KBS and proves to the SPIRE server that it holds the TEE key of that
// attestation.
package main

import (
	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	agentv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"

	"github.com/cocoon-cc/cocoon/spire/nodeattestor"
)

func main() {
	p := new(nodeattestor.Agent)
	pluginmain.Serve(agentv1.NodeAttestorPluginServer(p), configv1.ConfigServiceServer(p))
}
