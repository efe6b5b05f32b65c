// Package sample verifies the "sample" TEE's evidence. It proves nothing: the
// evidence is plain JSON anyone can write. It exists for development and
// tests, and Cocoon's default resource policy refuses its tokens.
package sample

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Evidence is what the sample attester produces.
type Evidence struct {
	SVN        string `json:"svn"`
	ReportData string `json:"report_data"`
}

// Verifier implements verifier.Verifier for the sample TEE.
type Verifier struct{}

// Evaluate checks the report-data binding and returns the claims Trustee's
// sample verifier returns, so Trustee's default policy applies unchanged.
func (Verifier) Evaluate(_ context.Context, raw json.RawMessage, want verifier.Expected) ([]verifier.TeeClaims, error) {
	// Strictly the sample attester's two fields: another TEE's evidence
	// is refused, not read as sample evidence with empty claims.
	var fields struct {
		SVN        *string `json:"svn"`
		ReportData *string `json:"report_data"`
	}
	if err := verifier.DecodeStrict(raw, &fields); err != nil {
		return nil, fmt.Errorf("%w: sample: %v", verifier.ErrMalformedEvidence, err)
	}
	if fields.SVN == nil || fields.ReportData == nil {
		return nil, fmt.Errorf("%w: sample: svn and report_data are required", verifier.ErrMalformedEvidence)
	}
	ev := Evidence{SVN: *fields.SVN, ReportData: *fields.ReportData}
	if want.ReportData != nil {
		got, err := base64.StdEncoding.DecodeString(ev.ReportData)
		if err != nil {
			return nil, fmt.Errorf("%w: sample: report_data: %v", verifier.ErrMalformedEvidence, err)
		}
		// The sample TEE has no fixed-width field: the digest must match exactly.
		if !bytes.Equal(got, want.ReportData) {
			return nil, verifier.ErrReportDataMismatch
		}
	}
	claims := verifier.Claims{
		"svn":           ev.SVN,
		"report_data":   ev.ReportData,
		"launch_digest": "abcde",
		"platform_version": map[string]any{
			"major": 1,
			"minor": 4,
		},
		"debug": false,
	}
	if want.InitDataDigest != nil {
		// Nothing in sample evidence can carry initdata; record what was claimed.
		claims["init_data"] = base64.StdEncoding.EncodeToString(want.InitDataDigest)
	}
	return verifier.CPU(claims, nil)
}
