// Package attest picks how the CDH gets evidence: from the attestation
// agent (the default, as upstream) or in process, for tests and for
// cdh-oneshot on a guest without an AA.
package attest

import (
	"context"
	"errors"
	"fmt"

	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/guest/attester/tpm"
	"github.com/cocoon-cc/cocoon/guest/cdh/aaclient"
	"github.com/cocoon-cc/cocoon/guest/cdh/config"
)

// Kinds of evidence source.
const (
	AA     = "aa"
	Sample = "sample"
	TPM    = "tpm"
)

// ErrUnknown names an unknown evidence source.
var ErrUnknown = errors.New("unknown attester (want aa, sample or tpm)")

// Open returns the attester kind names and a function releasing it.
func Open(ctx context.Context, kind, aaSocket string) (attester.Attester, func() error, error) {
	switch kind {
	case AA, "":
		a, err := aaclient.Dial(ctx, config.SocketPath(aaSocket))
		if err != nil {
			return nil, nil, err
		}
		return a, a.Close, nil
	case Sample:
		return sample.Attester{}, func() error { return nil }, nil
	case TPM:
		a, err := tpm.Open(tpm.Options{})
		if err != nil {
			return nil, nil, err
		}
		return a, a.Close, nil
	}
	return nil, nil, fmt.Errorf("%w: %q", ErrUnknown, kind)
}
