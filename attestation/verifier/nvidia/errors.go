package nvidia

import (
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Every check has its own error. Each wraps one of the verifier package's
// shared errors, so callers can test either the precise check
// (errors.Is(err, ErrNonce)) or its class (errors.Is(err, verifier.ErrEndorsement)).
var (
	// ErrEvidenceJSON: the evidence is not Trustee's device evidence list.
	ErrEvidenceJSON = fmt.Errorf("%w: nvidia evidence JSON", verifier.ErrMalformedEvidence)
	// ErrReport: the SPDM GET_MEASUREMENTS request and response do not parse.
	ErrReport = fmt.Errorf("%w: nvidia SPDM measurement report", verifier.ErrMalformedEvidence)
	// ErrOpaqueData: NVIDIA's opaque data in the response does not parse.
	ErrOpaqueData = fmt.Errorf("%w: nvidia opaque data", verifier.ErrMalformedEvidence)
	// ErrCertificate: the certificate chain does not parse.
	ErrCertificate = fmt.Errorf("%w: nvidia certificate chain", verifier.ErrMalformedEvidence)

	// ErrUnsupportedArch: only Hopper GPUs are verified locally.
	ErrUnsupportedArch = fmt.Errorf("%w: nvidia device architecture", verifier.ErrUnexpectedTeeConfig)

	// ErrChainLength: the chain has no intermediate between the device
	// key and the root.
	ErrChainLength = fmt.Errorf("%w: nvidia chain needs the root and the attestation key's certificate", verifier.ErrEndorsement)
	// ErrUntrustedRoot: the chain's root is not NVIDIA's device root (or
	// one of Options.Roots).
	ErrUntrustedRoot = fmt.Errorf("%w: nvidia chain root is not trusted", verifier.ErrEndorsement)
	// ErrChain: a certificate is not signed by the next, or is not valid
	// at the verification time.
	ErrChain = fmt.Errorf("%w: nvidia certificate chain does not verify", verifier.ErrEndorsement)
	// ErrFWID: the attestation key's certificate carries no FWID, or one
	// that is not the report's: the key is not that firmware's.
	ErrFWID = fmt.Errorf("%w: nvidia attestation key FWID", verifier.ErrEndorsement)

	// ErrRevoked: the OCSP responder says a certificate of the chain is
	// revoked.
	ErrRevoked = fmt.Errorf("%w: nvidia certificate revoked", verifier.ErrEndorsement)
	// ErrRevocationUnknown: the OCSP responder could not vouch for a
	// certificate (unreachable, unknown, stale or badly signed answer).
	ErrRevocationUnknown = fmt.Errorf("%w: nvidia certificate revocation status unknown", verifier.ErrEndorsement)

	// ErrSignature: the report is not signed by the attestation key.
	ErrSignature = fmt.Errorf("%w: nvidia measurement report", verifier.ErrSignature)

	// ErrNonce: the report answers another nonce than the expected report
	// data.
	ErrNonce = fmt.Errorf("%w: nvidia report nonce", verifier.ErrReportDataMismatch)
)
