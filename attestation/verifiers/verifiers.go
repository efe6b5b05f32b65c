// Package verifiers registers the TEE verifiers Cocoon ships.
package verifiers

import (
	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/sample"
	"github.com/cocoon-cc/cocoon/protocol"
)

// Default is the registry of every built-in verifier.
func Default() verifier.Registry {
	return verifier.Registry{
		protocol.TeeSample: sample.Verifier{},
	}
}
