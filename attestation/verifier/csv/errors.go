package csv

import (
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// One error per check, each of the class (verifier.ErrEndorsement, ...)
// the attestation service reports.
var (
	// ErrEvidenceJSON: the evidence is not the JSON Trustee's CSV verifier
	// reads (a field missing, of the wrong type or length).
	ErrEvidenceJSON = fmt.Errorf("%w: csv evidence JSON", verifier.ErrMalformedEvidence)
	// ErrReportFormat: the report's magic and flags name no known format.
	ErrReportFormat = fmt.Errorf("%w: csv report format", verifier.ErrMalformedEvidence)
	// ErrCertificate: a certificate does not parse (size, curve, point).
	ErrCertificate = fmt.Errorf("%w: csv certificate", verifier.ErrMalformedEvidence)
	// ErrEventLog: the CC event log does not parse or does not replay to
	// the report's RTMRs.
	ErrEventLog = fmt.Errorf("%w: csv event log", verifier.ErrMalformedEvidence)

	// ErrCertUsage: a certificate's key usage is not its place in the chain
	// (HRK, HSK, CEK, PEK).
	ErrCertUsage = fmt.Errorf("%w: certificate key usage", verifier.ErrEndorsement)
	// ErrUntrustedRoot: the root is not Hygon's HRK.
	ErrUntrustedRoot = fmt.Errorf("%w: root is not Hygon's HRK", verifier.ErrEndorsement)
	// ErrHSKSignature: the HSK is not signed by the HRK.
	ErrHSKSignature = fmt.Errorf("%w: HSK not signed by the HRK", verifier.ErrEndorsement)
	// ErrCEKSignature: the CEK is not signed by the HSK.
	ErrCEKSignature = fmt.Errorf("%w: CEK not signed by the HSK", verifier.ErrEndorsement)
	// ErrPEKSignature: the PEK is not signed by the CEK.
	ErrPEKSignature = fmt.Errorf("%w: PEK not signed by the CEK", verifier.ErrEndorsement)
	// ErrNoHSKCEK: the HSK and CEK are in neither the evidence, the
	// certificate directory nor Hygon's KDS.
	ErrNoHSKCEK = fmt.Errorf("%w: no HSK/CEK for the chip", verifier.ErrEndorsement)
	// ErrKDS: Hygon's KDS did not deliver the HSK and CEK.
	ErrKDS = fmt.Errorf("%w: Hygon KDS", verifier.ErrEndorsement)
	// ErrCertDir: the certificate directory could not be read.
	ErrCertDir = fmt.Errorf("%w: certificate directory", verifier.ErrEndorsement)
	// ErrSignerMismatch: the PEK or serial number the evidence names is not
	// the one the firmware wrote into the report's signer block.
	ErrSignerMismatch = fmt.Errorf("%w: PEK or serial number is not the report's", verifier.ErrEndorsement)

	// ErrReportSignature: the report's SM2 signature does not verify with
	// the PEK.
	ErrReportSignature = fmt.Errorf("%w: report signature", verifier.ErrSignature)
)
