// Package verifier defines how the attestation service asks a TEE-specific
// verifier to check evidence, and the helpers every verifier shares.
//
// A verifier checks the evidence cryptographically (signatures, certificate
// chains, collateral), checks that it is bound to the expected report data
// and initdata digest, and returns the claims it derived. It never decides
// whether the claims are good enough: that is the attestation policy's job.
package verifier

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"

	"github.com/cocoon-cc/cocoon/protocol"
)

// Claims are the facts a verifier read from verified evidence. Names follow
// Trustee's verifiers so that Trustee's attestation policies work unchanged.
// Two keys are special: "report_data" and "init_data" are lifted out of the
// TEE's claims into the top of the annotated evidence, as Trustee does.
type Claims map[string]any

// TeeClaims are the claims of one attester, tagged with its device class
// ("cpu", "gpu", ...); the class picks the policy "<policy-id>_<class>".
type TeeClaims struct {
	Class  string
	Claims Claims
}

// CPU is the answer of an Evaluate whose evidence is one CPU attester's:
// its claims, or the error that refused them.
func CPU(claims Claims, err error) ([]TeeClaims, error) {
	if err != nil {
		return nil, err
	}
	return []TeeClaims{{Class: "cpu", Claims: claims}}, nil
}

// Expected holds the bindings the evidence must carry. A nil member is not
// checked.
type Expected struct {
	// ReportData is the digest of the runtime data (SHA-384 of its canonical
	// JSON in KBS protocol 0.4.0), before any padding to the TEE's field.
	ReportData []byte
	// InitDataDigest is the digest of the initdata document.
	InitDataDigest []byte
}

// Verifier checks evidence of one TEE type.
type Verifier interface {
	Evaluate(ctx context.Context, evidence json.RawMessage, expected Expected) ([]TeeClaims, error)
}

// Challenger is a verifier whose TEE answers a challenge of its own
// instead of the KBS's nonce (IBM SE: an attestation request only the
// Ultravisor can unpack). base is the nonce the KBS would have sent.
type Challenger interface {
	// Challenge returns the challenge for the session of base.
	Challenge(ctx context.Context, base string) (string, error)
	// CheckChallenge reports whether nonce is a challenge issued for the
	// session of base.
	CheckChallenge(nonce, base string) error
}

// Errors every verifier reports the same way, so callers can tell a forged
// or mismatched evidence from a malformed one.
var (
	ErrUnsupportedTee      = errors.New("no verifier for this tee")
	ErrMalformedEvidence   = errors.New("malformed evidence")
	ErrReportDataMismatch  = errors.New("report data does not match the runtime data")
	ErrInitDataMismatch    = errors.New("initdata digest does not match the evidence")
	ErrSignature           = errors.New("evidence signature is invalid")
	ErrEndorsement         = errors.New("endorsement chain is invalid")
	ErrUnexpectedTeeConfig = errors.New("evidence reports an unexpected TEE configuration")
)

// Registry maps TEE names to verifiers. Verifiers are registered explicitly
// by the binary that wires the attestation service.
type Registry map[protocol.Tee]Verifier

// Lookup returns the verifier for tee.
func (r Registry) Lookup(tee protocol.Tee) (Verifier, error) {
	v, ok := r[tee]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedTee, tee)
	}
	return v, nil
}

// DecodeStrict decodes JSON evidence into v, refusing members v does not
// have: another TEE's evidence must not pass for this one's with empty
// claims.
// It decodes as encoding/json's Decoder with DisallowUnknownFields does
// (one value; names matched regardless of case), by encoding/json/v2's
// faster implementation: a tenth of an RCAR attestation's JSON work.
func DecodeStrict(raw json.RawMessage, v any) error {
	return jsonv2.UnmarshalDecode(jsontext.NewDecoder(bytes.NewReader(raw)), v,
		jsonv1.DefaultOptionsV1(), jsonv2.RejectUnknownMembers(true))
}

// Fit zero-pads or truncates digest to a TEE field of width n, the way the
// guest writes it into that field.
func Fit(digest []byte, n int) []byte {
	out := make([]byte, n)
	copy(out, digest)
	return out
}

// CheckReportData compares a TEE's report-data field with the expected
// digest fitted to the field's width. It is a no-op when nothing is expected.
func CheckReportData(field, expected []byte) error {
	if expected == nil {
		return nil
	}
	if !bytes.Equal(field, Fit(expected, len(field))) {
		return ErrReportDataMismatch
	}
	return nil
}

// CheckInitData compares a TEE's initdata field (HOST_DATA, MRCONFIGID, ...)
// with the expected digest fitted to the field's width.
func CheckInitData(field, expected []byte) error {
	if expected == nil {
		return nil
	}
	if !bytes.Equal(field, Fit(expected, len(field))) {
		return ErrInitDataMismatch
	}
	return nil
}
