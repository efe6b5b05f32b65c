// Package tdx verifies Intel TDX evidence the way Trustee's TDX verifier
// does: DCAP quote verification (the dcap package: PCK chain to Intel's SGX
// Root CA, QE report, quote signature, TCB info and QE identity collateral,
// CRLs), the TDX module and TCB status, report data and MRCONFIGID
// bindings, and replay of the CC event log against the RTMRs. Claims carry
// Trustee's names so its policies apply unchanged.
//
// Parsing (quote.go, eventlog.go) is kept apart from verification (tdx.go,
// tcb.go) and from claims (claims.go).
package tdx

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// Options configure a Verifier: where collateral comes from, the trusted
// roots and the verification time (see dcap.Options).
type Options = dcap.Options

// Verifier verifies TDX evidence; it is safe for concurrent use.
type Verifier struct {
	dcap *dcap.Verifier
}

var _ verifier.Verifier = (*Verifier)(nil)

// New returns a Verifier.
func New(opts Options) (*Verifier, error) {
	d, err := dcap.New(dcap.TDX, opts)
	if err != nil {
		return nil, err
	}
	return &Verifier{dcap: d}, nil
}

// evidence is Trustee's TDX evidence. The members stay raw: the CC event
// log is usually 1 MiB of base64, which is decoded without the copy and
// rune-by-rune unquoting a string field would cost.
type evidence struct {
	Quote      json.RawMessage `json:"quote"`
	CCEventLog json.RawMessage `json:"cc_eventlog"`
}

// Evaluate implements verifier.Verifier for evidence of the form
// {"quote":"<base64>","cc_eventlog":"<base64>"|null}.
func (v *Verifier) Evaluate(ctx context.Context, raw json.RawMessage, expected verifier.Expected) ([]verifier.TeeClaims, error) {
	var ev evidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEvidenceEncoding, err)
	}
	quote, err := decodeBase64(ev.Quote)
	if err != nil {
		return nil, fmt.Errorf("%w: quote: %v", ErrEvidenceEncoding, err)
	}
	if len(quote) == 0 {
		return nil, fmt.Errorf("%w: empty quote", ErrEvidenceEncoding)
	}
	log, err := decodeBase64(ev.CCEventLog)
	if err != nil {
		return nil, fmt.Errorf("%w: cc_eventlog: %v", ErrEvidenceEncoding, err)
	}
	return verifier.CPU(v.VerifyQuote(ctx, quote, log, expected))
}

// decodeBase64 decodes a JSON string of standard base64; a missing or null
// member decodes to nothing.
func decodeBase64(raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] != '"' {
		return nil, errors.New("not a string")
	}
	text := raw[1 : len(raw)-1]
	if bytes.IndexByte(text, '\\') >= 0 {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		text = []byte(s)
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(out, text)
	return out[:n], err
}

// VerifyQuote verifies a raw quote and, when eventLog is not empty, the CC
// event log that goes with it, and returns the claims.
func (v *Verifier) VerifyQuote(ctx context.Context, rawQuote, eventLog []byte, expected verifier.Expected) (verifier.Claims, error) {
	q, err := ParseQuote(rawQuote)
	if err != nil {
		return nil, err
	}
	return v.VerifyParsedQuote(ctx, q, eventLog, expected)
}

// VerifyParsedQuote is VerifyQuote of a parsed quote.
func (v *Verifier) VerifyParsedQuote(ctx context.Context, q *Quote, eventLog []byte, expected verifier.Expected) (verifier.Claims, error) {
	res, err := v.dcap.Verify(ctx, &q.Quote, func(r *dcap.Result) (*dcap.TCBResult, error) { return evaluateTCB(q, r) })
	if err != nil {
		return nil, err
	}
	if err := checkBindings(q, expected); err != nil {
		return nil, err
	}
	log, err := verifyEventLog(eventLog, q)
	if err != nil {
		return nil, err
	}
	claims := evidenceClaims(q, log, &res.Chain.Platform)
	dcap.AddClaims(claims, res)
	return claims, nil
}

func checkBindings(q *Quote, expected verifier.Expected) error {
	if err := verifier.CheckReportData(q.Body.ReportData[:], expected.ReportData); err != nil {
		return fmt.Errorf("tdx: REPORT_DATA %x: %w", q.Body.ReportData, err)
	}
	if err := verifier.CheckInitData(q.Body.MrConfigID[:], expected.InitDataDigest); err != nil {
		return fmt.Errorf("tdx: MRCONFIGID %x: %w", q.Body.MrConfigID, err)
	}
	return nil
}

// verifyEventLog parses the CC event log, if any, and checks it replays to
// the quote's RTMRs.
func verifyEventLog(data []byte, q *Quote) (*EventLog, error) {
	if len(data) == 0 {
		return nil, nil
	}
	log, err := ParseEventLog(data)
	if err != nil {
		return nil, err
	}
	rtmrs, err := log.ReplayRTMRs()
	if err != nil {
		return nil, err
	}
	for i := range rtmrs {
		if rtmrs[i] != q.Body.RTMR[i] {
			return nil, fmt.Errorf("%w: RTMR%d replays to %x, quote has %x", ErrRTMRMismatch, i, rtmrs[i], q.Body.RTMR[i])
		}
	}
	return log, nil
}
