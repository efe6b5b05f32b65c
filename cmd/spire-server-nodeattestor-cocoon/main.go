// Command spire-server-nodeattestor-cocoon is the SPIRE server's
// NodeAttestor plugin "cocoon": it admits SPIRE agents that prove, with a
// Cocoon KBS's EAR token and its TEE key, that they run in an attested TEE.
package main

import (
	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	serverv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"

	"github.com/cocoon-cc/cocoon/spire/nodeattestor"
)

func main() {
	p := new(nodeattestor.Server)
	pluginmain.Serve(serverv1.NodeAttestorPluginServer(p), configv1.ConfigServiceServer(p))
}
