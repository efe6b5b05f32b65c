package snp

import (
	"errors"
	"fmt"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Every check has its own error. Each wraps one of the verifier package's
// shared errors, so callers can test either the precise check
// (errors.Is(err, ErrTCBMismatch)) or its class
// (errors.Is(err, verifier.ErrEndorsement)).
var (
	// ErrEvidenceJSON: the evidence is not the JSON form Trustee's SNP
	// verifier reads.
	ErrEvidenceJSON = fmt.Errorf("%w: snp evidence JSON", verifier.ErrMalformedEvidence)
	// ErrReportSize: a raw report is not 1184 bytes.
	ErrReportSize = fmt.Errorf("%w: snp report size", verifier.ErrMalformedEvidence)
	// ErrReportVersion: the report version is not 2 to 5.
	ErrReportVersion = fmt.Errorf("%w: snp report version", verifier.ErrMalformedEvidence)
	// ErrReportFormat: a reserved field is set or the policy is malformed.
	ErrReportFormat = fmt.Errorf("%w: snp report format", verifier.ErrMalformedEvidence)
	// ErrCertificate: a certificate does not parse.
	ErrCertificate = fmt.Errorf("%w: snp certificate", verifier.ErrMalformedEvidence)

	// ErrUnknownProduct: the report's CPUID names no SEV-SNP product, or a
	// version 2 report needs Options.Product to be fetched from the KDS.
	ErrUnknownProduct = fmt.Errorf("%w: unknown SEV-SNP product", verifier.ErrUnexpectedTeeConfig)
	// ErrProductMismatch: the report's product is not Options.Product.
	ErrProductMismatch = fmt.Errorf("%w: SEV-SNP product is not the configured one", verifier.ErrUnexpectedTeeConfig)
	// ErrVMPL: the report was not requested from VMPL 0.
	ErrVMPL = fmt.Errorf("%w: report VMPL is not 0", verifier.ErrUnexpectedTeeConfig)

	// ErrNoEndorsementKey: no VCEK/VLEK in the evidence, the certificate
	// directory or the KDS.
	ErrNoEndorsementKey = fmt.Errorf("%w: no endorsement key certificate", verifier.ErrEndorsement)
	// ErrEndorsementKeyForm: the VCEK/VLEK is not what AMD's KDS issues
	// (algorithm, key, subject or extensions).
	ErrEndorsementKeyForm = fmt.Errorf("%w: endorsement key certificate form", verifier.ErrEndorsement)
	// ErrEndorsementProduct: the VCEK/VLEK was issued for another product.
	ErrEndorsementProduct = fmt.Errorf("%w: endorsement key is for another product", verifier.ErrEndorsement)
	// ErrUntrustedRoot: a supplied ARK is not the trusted root (AMD's, or
	// Options.Roots) of the product, or no root of the product is trusted.
	ErrUntrustedRoot = fmt.Errorf("%w: ARK is not a trusted root", verifier.ErrEndorsement)
	// ErrIntermediateSignature: a supplied ASK/ASVK is not signed by the ARK.
	ErrIntermediateSignature = fmt.Errorf("%w: ASK/ASVK not signed by the ARK", verifier.ErrEndorsement)
	// ErrEndorsementKeySignature: the VCEK/VLEK is not signed by the ASK/ASVK.
	ErrEndorsementKeySignature = fmt.Errorf("%w: VCEK/VLEK not signed by the ASK/ASVK", verifier.ErrEndorsement)
	// ErrCertExpired: a certificate of the chain is not valid at Options.Now.
	ErrCertExpired = fmt.Errorf("%w: certificate not valid at verification time", verifier.ErrEndorsement)
	// ErrHWIDMismatch: the VCEK belongs to another chip.
	ErrHWIDMismatch = fmt.Errorf("%w: VCEK hwID is not the report's chip_id", verifier.ErrEndorsement)
	// ErrTCBMismatch: the VCEK/VLEK was issued for another TCB.
	ErrTCBMismatch = fmt.Errorf("%w: endorsement key TCB is not the reported TCB", verifier.ErrEndorsement)
	// ErrKDS: the KDS did not deliver a VCEK.
	ErrKDS = fmt.Errorf("%w: AMD KDS", verifier.ErrEndorsement)
	// ErrKDSRateLimited: the KDS kept answering 429; see RateLimitedError.
	ErrKDSRateLimited = fmt.Errorf("%w: rate limited", ErrKDS)
	// ErrCertDir: the certificate directory could not be read.
	ErrCertDir = fmt.Errorf("%w: certificate directory", verifier.ErrEndorsement)

	// ErrUnsignedReport: the firmware did not sign the report (SIGNING_KEY
	// is "none").
	ErrUnsignedReport = fmt.Errorf("%w: report is not signed", verifier.ErrSignature)
	// ErrReportSignature: the report's ECDSA P-384 signature does not verify
	// with the VCEK/VLEK.
	ErrReportSignature = fmt.Errorf("%w: report signature", verifier.ErrSignature)
)

// RateLimitedError is returned when the KDS still answers 429 Too Many
// Requests after the configured attempts. RetryAfter is the server's hint
// (zero when it gave none).
type RateLimitedError struct {
	URL        string
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	msg := fmt.Sprintf("%v: %s", ErrKDSRateLimited, e.URL)
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (retry after %v)", e.RetryAfter)
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrKDSRateLimited) hold.
func (e *RateLimitedError) Unwrap() error { return ErrKDSRateLimited }

// errTransient marks KDS failures worth retrying (network, 5xx).
var errTransient = errors.New("transient")
