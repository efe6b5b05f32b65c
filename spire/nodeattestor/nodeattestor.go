// Package nodeattestor is a SPIRE NodeAttestor plugin pair ("cocoon") that
// attests SPIRE agents with Cocoon's attestation: the agent, in a TEE,
// runs the KBS handshake and sends its EAR token; the server checks the
// token against the KBS's signing keys and the appraisal, then has the
// agent sign a fresh challenge with the TEE key the token vouches for, so a
// token seen elsewhere cannot attest another node. An owner who runs
// SPIRE keeps it and gets hardware-attested agents.
package nodeattestor

import (
	"errors"
	"fmt"

	"github.com/hashicorp/hcl"
)

// PluginName is the NodeAttestor's name in SPIRE's configuration.
const PluginName = "cocoon"

// payload is the agent's attestation data.
type payload struct {
	Token string `json:"token"`
}

// challengeSize is the server's challenge, in bytes.
const challengeSize = 32

// maxPayload bounds what the server reads from an agent.
const maxPayload = 64 << 10

// ErrConfig is returned for a configuration the plugin cannot use.
var ErrConfig = errors.New("cocoon node attestor: bad configuration")

func decodeHCL(text string, v any) error {
	if err := hcl.Decode(v, text); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return nil
}
