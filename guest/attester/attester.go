// Package attester defines how the guest side collects TEE evidence.
package attester

import (
	"context"
	"encoding/json"

	"github.com/cocoon-cc/cocoon/protocol"
)

// Attester produces evidence of the TEE it runs in.
type Attester interface {
	// Tee names the TEE type, as the KBS protocol spells it.
	Tee() protocol.Tee
	// Evidence returns evidence carrying reportData (a digest the attester
	// fits to its TEE's report-data field) in the TEE's wire form.
	Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error)
}

// Challenged is an Attester whose evidence answers the KBS's challenge
// itself rather than a digest of it: IBM SE, whose challenge is an
// attestation request for the Ultravisor.
type Challenged interface {
	EvidenceFor(ctx context.Context, challenge string, reportData []byte) (json.RawMessage, error)
}
