package tdx

import (
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Every check has its own error; those of DCAP quote verification, which
// TDX shares with SGX, are the dcap package's. Each wraps one of the
// verifier package's shared errors, so errors.Is works with either.
var (
	// Malformed evidence.
	ErrEvidenceEncoding = fmt.Errorf("%w: tdx evidence is not the expected JSON/base64", verifier.ErrMalformedEvidence)
	ErrEventLogFormat   = fmt.Errorf("%w: CC event log is malformed", verifier.ErrMalformedEvidence)

	// Bindings inside the quote.
	ErrRTMRMismatch = fmt.Errorf("%w: CC event log does not replay to the quote's RTMRs", verifier.ErrSignature)

	// Endorsements.
	ErrTDXModuleMismatch = fmt.Errorf("%w: TDX module does not match the TCB info", verifier.ErrEndorsement)
)
