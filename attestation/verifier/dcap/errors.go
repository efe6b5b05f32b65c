package dcap

import (
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Every check has its own error. Each wraps one of the verifier package's
// shared errors, so errors.Is works with either.
var (
	// Malformed quotes.
	ErrQuoteFormat       = fmt.Errorf("%w: DCAP quote layout is invalid", verifier.ErrMalformedEvidence)
	ErrQuoteVersion      = fmt.Errorf("%w: unsupported DCAP quote version", verifier.ErrMalformedEvidence)
	ErrTeeType           = fmt.Errorf("%w: quote is of another TEE", verifier.ErrMalformedEvidence)
	ErrAttestationKey    = fmt.Errorf("%w: unsupported attestation key", verifier.ErrMalformedEvidence)
	ErrQEVendor          = fmt.Errorf("%w: quote was not produced by Intel's quoting enclave", verifier.ErrMalformedEvidence)
	ErrCertificationData = fmt.Errorf("%w: unsupported quote certification data", verifier.ErrMalformedEvidence)
	ErrPCKChainFormat    = fmt.Errorf("%w: PCK certificate chain is malformed", verifier.ErrMalformedEvidence)

	// Signatures inside the quote.
	ErrQuoteSignature    = fmt.Errorf("%w: quote signature does not verify with the attestation key", verifier.ErrSignature)
	ErrQEReportSignature = fmt.Errorf("%w: QE report signature does not verify with the PCK key", verifier.ErrSignature)
	ErrQEReportData      = fmt.Errorf("%w: QE report data does not bind the attestation key", verifier.ErrSignature)

	// Endorsements: the PCK chain and Intel's collateral.
	ErrPCKChain              = fmt.Errorf("%w: PCK certificate chain does not verify to a trusted root", verifier.ErrEndorsement)
	ErrCertificateValidity   = fmt.Errorf("%w: certificate is not valid at the verification time", verifier.ErrEndorsement)
	ErrPCKRevoked            = fmt.Errorf("%w: PCK certificate chain is revoked", verifier.ErrEndorsement)
	ErrCollateralUnavailable = fmt.Errorf("%w: DCAP collateral could not be fetched", verifier.ErrEndorsement)
	ErrCollateralFormat      = fmt.Errorf("%w: DCAP collateral is malformed", verifier.ErrEndorsement)
	ErrCollateralSignature   = fmt.Errorf("%w: DCAP collateral signature is invalid", verifier.ErrEndorsement)
	ErrCollateralExpired     = fmt.Errorf("%w: DCAP collateral is not valid at the verification time", verifier.ErrEndorsement)
	ErrTCBInfoMismatch       = fmt.Errorf("%w: TCB info does not apply to this platform", verifier.ErrEndorsement)
	ErrQEIdentityMismatch    = fmt.Errorf("%w: quoting enclave does not match Intel's QE identity", verifier.ErrEndorsement)
	ErrTCBNotSupported       = fmt.Errorf("%w: no TCB level of the TCB info matches the platform", verifier.ErrEndorsement)
	ErrTCBRevoked            = fmt.Errorf("%w: platform TCB is revoked", verifier.ErrEndorsement)
)
