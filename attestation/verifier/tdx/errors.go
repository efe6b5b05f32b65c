package tdx

import (
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Every check has its own error. Each wraps one of the verifier package's
// shared errors, so errors.Is works with either.
var (
	// Malformed evidence.
	ErrEvidenceEncoding  = fmt.Errorf("%w: tdx evidence is not the expected JSON/base64", verifier.ErrMalformedEvidence)
	ErrQuoteFormat       = fmt.Errorf("%w: tdx quote layout is invalid", verifier.ErrMalformedEvidence)
	ErrQuoteVersion      = fmt.Errorf("%w: unsupported tdx quote version", verifier.ErrMalformedEvidence)
	ErrTeeType           = fmt.Errorf("%w: quote is not a TDX quote", verifier.ErrMalformedEvidence)
	ErrAttestationKey    = fmt.Errorf("%w: unsupported attestation key", verifier.ErrMalformedEvidence)
	ErrQEVendor          = fmt.Errorf("%w: quote was not produced by Intel's quoting enclave", verifier.ErrMalformedEvidence)
	ErrCertificationData = fmt.Errorf("%w: unsupported quote certification data", verifier.ErrMalformedEvidence)
	ErrPCKChainFormat    = fmt.Errorf("%w: PCK certificate chain is malformed", verifier.ErrMalformedEvidence)
	ErrEventLogFormat    = fmt.Errorf("%w: CC event log is malformed", verifier.ErrMalformedEvidence)

	// Signatures and bindings inside the quote.
	ErrQuoteSignature    = fmt.Errorf("%w: quote signature does not verify with the attestation key", verifier.ErrSignature)
	ErrQEReportSignature = fmt.Errorf("%w: QE report signature does not verify with the PCK key", verifier.ErrSignature)
	ErrQEReportData      = fmt.Errorf("%w: QE report data does not bind the attestation key", verifier.ErrSignature)
	ErrRTMRMismatch      = fmt.Errorf("%w: CC event log does not replay to the quote's RTMRs", verifier.ErrSignature)

	// Endorsements: the PCK chain and Intel's collateral.
	ErrPCKChain              = fmt.Errorf("%w: PCK certificate chain does not verify to a trusted root", verifier.ErrEndorsement)
	ErrCertificateValidity   = fmt.Errorf("%w: certificate is not valid at the verification time", verifier.ErrEndorsement)
	ErrPCKRevoked            = fmt.Errorf("%w: PCK certificate chain is revoked", verifier.ErrEndorsement)
	ErrCollateralUnavailable = fmt.Errorf("%w: TDX collateral could not be fetched", verifier.ErrEndorsement)
	ErrCollateralFormat      = fmt.Errorf("%w: TDX collateral is malformed", verifier.ErrEndorsement)
	ErrCollateralSignature   = fmt.Errorf("%w: TDX collateral signature is invalid", verifier.ErrEndorsement)
	ErrCollateralExpired     = fmt.Errorf("%w: TDX collateral is not valid at the verification time", verifier.ErrEndorsement)
	ErrTCBInfoMismatch       = fmt.Errorf("%w: TCB info does not apply to this platform", verifier.ErrEndorsement)
	ErrQEIdentityMismatch    = fmt.Errorf("%w: quoting enclave does not match Intel's QE identity", verifier.ErrEndorsement)
	ErrTDXModuleMismatch     = fmt.Errorf("%w: TDX module does not match the TCB info", verifier.ErrEndorsement)
	ErrTCBNotSupported       = fmt.Errorf("%w: no TCB level of the TCB info matches the platform", verifier.ErrEndorsement)
	ErrTCBRevoked            = fmt.Errorf("%w: platform TCB is revoked", verifier.ErrEndorsement)
)
