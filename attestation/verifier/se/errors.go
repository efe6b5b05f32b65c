package se

import (
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// One error per check, each of the class the attestation service reports.
var (
	// ErrEvidenceJSON: the evidence is not Trustee's SE attestation
	// response (a field missing, not base64, of the wrong size).
	ErrEvidenceJSON = fmt.Errorf("%w: se evidence JSON", verifier.ErrMalformedEvidence)
	// ErrHeader: the SE image header does not parse.
	ErrHeader = fmt.Errorf("%w: se image header", verifier.ErrMalformedEvidence)
	// ErrChallenge: the runtime data's nonce is not an attestation request
	// this verifier issued for the session.
	ErrChallenge = fmt.Errorf("%w: se challenge not issued for this session", verifier.ErrMalformedEvidence)

	// ErrNotIssued: the sealed measurement key or request nonce the
	// evidence echoes were not sealed by this verifier.
	ErrNotIssued = fmt.Errorf("%w: se request not issued by this verifier", verifier.ErrSignature)
	// ErrMeasurement: the HMAC-SHA512 measurement does not verify with the
	// request's measurement key.
	ErrMeasurement = fmt.Errorf("%w: se measurement", verifier.ErrSignature)

	// ErrImageTags: the SE header tags are not the configured image's.
	ErrImageTags = fmt.Errorf("%w: se image is not the configured one", verifier.ErrUnexpectedTeeConfig)
	// ErrAttestationKey: the host key that unpacked the request is not one
	// of the configured host-key documents'.
	ErrAttestationKey = fmt.Errorf("%w: se request unpacked by an unknown host key", verifier.ErrUnexpectedTeeConfig)

	// ErrNoSigningKey: no (or more than one) IBM Z host-key signing key
	// among the certificates.
	ErrNoSigningKey = fmt.Errorf("%w: IBM Z host-key signing key", verifier.ErrEndorsement)
	// ErrSigningKeyChain: the signing key does not chain to the root CA
	// through an intermediate.
	ErrSigningKeyChain = fmt.Errorf("%w: IBM Z signing key chain", verifier.ErrEndorsement)
	// ErrCRL: a certificate of the chain has no valid CRL from its issuer.
	ErrCRL = fmt.Errorf("%w: CRL", verifier.ErrEndorsement)
	// ErrRevoked: a certificate of the chain or a host-key document is on
	// its issuer's CRL.
	ErrRevoked = fmt.Errorf("%w: certificate revoked", verifier.ErrEndorsement)
	// ErrHostKeyIssuer: a host-key document was not issued by the signing
	// key (issuer name or authority key id).
	ErrHostKeyIssuer = fmt.Errorf("%w: host-key document issuer", verifier.ErrEndorsement)
	// ErrHostKeySignature: a host-key document's signature does not verify
	// with the signing key.
	ErrHostKeySignature = fmt.Errorf("%w: host-key document signature", verifier.ErrEndorsement)
	// ErrHostKeyExpired: a host-key document is not valid at the
	// verification time.
	ErrHostKeyExpired = fmt.Errorf("%w: host-key document validity", verifier.ErrEndorsement)
	// ErrHostKeyType: a host-key document's key is not ECDH P-521.
	ErrHostKeyType = fmt.Errorf("%w: host-key document key type", verifier.ErrEndorsement)
	// ErrConfig: the host-key documents, certificates, CRLs or header
	// could not be read.
	ErrConfig = fmt.Errorf("%w: se configuration", verifier.ErrEndorsement)
)
