// Package cca collects Arm CCA attestation tokens inside a realm, through
// configfs-tsm (the arm_cca_guest provider, Linux >= 6.13), as
// guest-components' CCA attester does.
package cca

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/cocoon-cc/cocoon/guest/attester/tsm"
	"github.com/cocoon-cc/cocoon/protocol"
)

// Provider is the configfs-tsm provider of Arm CCA realms.
const Provider = "arm_cca_guest"

// challengeSize is the realm token's challenge: report data is zero-padded
// to it.
const challengeSize = 64

// Options configure an Attester.
type Options struct {
	// Root prefixes every kernel path ("/" when empty).
	Root string
	// TSM overrides the configfs-tsm client (tests play the kernel).
	TSM *tsm.Client
}

// Attester produces CCA evidence.
type Attester struct {
	tsm tsm.Client
}

// New returns an attester; it touches no device until asked.
func New(o Options) *Attester {
	a := &Attester{tsm: tsm.Client{Root: filepath.Join(o.Root, tsm.DefaultRoot)}}
	if o.TSM != nil {
		a.tsm = *o.TSM
	}
	return a
}

// Tee implements attester.Attester.
func (*Attester) Tee() protocol.Tee { return protocol.TeeCCA }

// Evidence implements attester.Attester: reportData, zero-padded to 64
// bytes, is the realm token's challenge.
func (a *Attester) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	if len(reportData) > challengeSize {
		return nil, fmt.Errorf("cca: report data of %d bytes exceeds %d", len(reportData), challengeSize)
	}
	in := make([]byte, challengeSize)
	copy(in, reportData)
	resp, err := a.tsm.Get(ctx, tsm.Request{Provider: Provider, InBlob: in})
	if err != nil {
		return nil, err
	}
	return EncodeEvidence(resp.OutBlob), nil
}

// EncodeEvidence is the evidence guest-components sends for a token:
// {"token": [...]}, the bytes as a JSON array of numbers (serde's form of
// a byte vector, the only one Trustee reads).
func EncodeEvidence(token []byte) json.RawMessage {
	b := make([]byte, 0, len(`{"token":[]}`)+4*len(token))
	b = append(b, `{"token":[`...)
	for i, v := range token {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(v), 10)
	}
	return append(b, "]}"...)
}
