package cca

import (
	"errors"
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Every check has its own error. Each wraps one of the verifier package's
// shared errors, so callers can test either the precise check
// (errors.Is(err, ErrRAKBinding)) or its class
// (errors.Is(err, verifier.ErrEndorsement)).
var (
	// ErrEvidenceJSON: the evidence is not {"token": <bytes>}.
	ErrEvidenceJSON = fmt.Errorf("%w: cca evidence JSON", verifier.ErrMalformedEvidence)
	// ErrCollection: the token is not the tag-399 collection of a platform
	// and a realm token.
	ErrCollection = fmt.Errorf("%w: cca token collection", verifier.ErrMalformedEvidence)
	// ErrCOSE: a platform or realm token is not a COSE_Sign1 message.
	ErrCOSE = fmt.Errorf("%w: cca COSE_Sign1", verifier.ErrMalformedEvidence)
	// ErrPlatformClaims: the platform claims-set is malformed or incomplete.
	ErrPlatformClaims = fmt.Errorf("%w: cca platform claims", verifier.ErrMalformedEvidence)
	// ErrRealmClaims: the realm claims-set is malformed or incomplete.
	ErrRealmClaims = fmt.Errorf("%w: cca realm claims", verifier.ErrMalformedEvidence)

	// ErrNoTrustAnchors: the verifier has no CPAK store configured.
	ErrNoTrustAnchors = fmt.Errorf("%w: no CCA trust anchor store configured", verifier.ErrEndorsement)
	// ErrUnknownPlatform: no CPAK is known for the token's instance id.
	ErrUnknownPlatform = fmt.Errorf("%w: no CPAK for this CCA platform instance", verifier.ErrEndorsement)
	// ErrRevokedCPAK: the trust anchor store denies the platform's CPAK
	// (its entry has an "x-reason").
	ErrRevokedCPAK = fmt.Errorf("%w: the CCA platform's CPAK is denied", verifier.ErrEndorsement)
	// ErrImplementationMismatch: the CPAK's entry names another
	// implementation id than the token.
	ErrImplementationMismatch = fmt.Errorf("%w: CPAK is for another CCA implementation", verifier.ErrEndorsement)
	// ErrRAKBinding: the platform token's challenge is not the hash of the
	// realm attestation key: the platform did not vouch for this realm.
	ErrRAKBinding = fmt.Errorf("%w: RAK is not bound to the platform token", verifier.ErrEndorsement)

	// ErrPlatformSignature: the platform token is not signed by the CPAK.
	ErrPlatformSignature = fmt.Errorf("%w: cca platform token", verifier.ErrSignature)
	// ErrRealmSignature: the realm token is not signed by the RAK.
	ErrRealmSignature = fmt.Errorf("%w: cca realm token", verifier.ErrSignature)

	// ErrNoPlatformReference: no platform reference value names the
	// token's implementation id.
	ErrNoPlatformReference = fmt.Errorf("%w: no reference values for this CCA implementation", verifier.ErrUnexpectedTeeConfig)
	// ErrPlatformReference: the platform's firmware and configuration match
	// none of its reference values.
	ErrPlatformReference = fmt.Errorf("%w: CCA platform firmware or configuration is not a reference state", verifier.ErrUnexpectedTeeConfig)
	// ErrDeniedPlatform: the platform is in a state the store denies (a
	// reference value with an "x-reason").
	ErrDeniedPlatform = fmt.Errorf("%w: CCA platform firmware or configuration is denied", verifier.ErrUnexpectedTeeConfig)
	// ErrRealmReference: the store lists realms and this one (initial and
	// extensible measurements, personalization value) is not among them.
	ErrRealmReference = fmt.Errorf("%w: CCA realm is not a reference state", verifier.ErrUnexpectedTeeConfig)

	// ErrStore: a trust anchor or reference value store does not load.
	ErrStore = errors.New("cca: store")
)
