package azvtpm

import (
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Every check has its own error, each wrapping one of the verifier
// package's shared errors.
var (
	ErrEvidenceEncoding = fmt.Errorf("%w: Azure vTPM evidence is not Trustee's JSON of version 0, 1 or 2", verifier.ErrMalformedEvidence)
	ErrHCLFormat        = fmt.Errorf("%w: HCL report is malformed", verifier.ErrMalformedEvidence)
	ErrAKPub            = fmt.Errorf("%w: HCL runtime data has no usable attestation key", verifier.ErrMalformedEvidence)
	ErrHCLBinding       = fmt.Errorf("%w: hardware report does not bind the HCL runtime data", verifier.ErrSignature)
	ErrNonce            = fmt.Errorf("%w: vTPM quote nonce", verifier.ErrReportDataMismatch)
	ErrUserData         = fmt.Errorf("%w: HCL user data", verifier.ErrReportDataMismatch)
)
