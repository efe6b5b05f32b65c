// Package sgx verifies Intel SGX DCAP (ECDSA) quotes the way Trustee's SGX
// verifier does: the dcap package's PCK chain, QE report, quote signature,
// TCB info and QE identity checks, then the SGX TCB level, the enclave's
// attributes (debug enclaves refused unless allowed), the report data and
// CONFIGID bindings. Claims carry Trustee's names so its policies apply
// unchanged; the enclave identity (MRENCLAVE, MRSIGNER, ISV ProdID and SVN)
// is the policy's to judge.
package sgx

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// Options configure a Verifier.
type Options struct {
	// DCAP says where collateral comes from, which roots are trusted and
	// the verification time; SGX collateral is read from the PCS's /sgx/
	// endpoints or, in a directory, from sgx-tcb-info-<FMSPC>.json and
	// sgx-qe-identity.json (see dcap.Options).
	DCAP dcap.Options
	// AllowDebug accepts enclaves whose DEBUG attribute is set. Their
	// memory is readable by the host, so they are refused by default.
	AllowDebug bool
}

// Verifier verifies SGX evidence; it is safe for concurrent use.
type Verifier struct {
	dcap       *dcap.Verifier
	allowDebug bool
}

var _ verifier.Verifier = (*Verifier)(nil)

// New returns a Verifier.
func New(opts Options) (*Verifier, error) {
	d, err := dcap.New(dcap.SGX, opts.DCAP)
	if err != nil {
		return nil, err
	}
	return &Verifier{dcap: d, allowDebug: opts.AllowDebug}, nil
}

// evidence is Trustee's SGX evidence.
type evidence struct {
	Quote string `json:"quote"`
}

// Evaluate implements verifier.Verifier for evidence of the form
// {"quote":"<base64>"}.
func (v *Verifier) Evaluate(ctx context.Context, raw json.RawMessage, expected verifier.Expected) ([]verifier.TeeClaims, error) {
	var ev evidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEvidenceEncoding, err)
	}
	quote, err := base64.StdEncoding.DecodeString(ev.Quote)
	if err != nil {
		return nil, fmt.Errorf("%w: quote: %v", ErrEvidenceEncoding, err)
	}
	if len(quote) == 0 {
		return nil, fmt.Errorf("%w: empty quote", ErrEvidenceEncoding)
	}
	return verifier.CPU(v.VerifyQuote(ctx, quote, expected))
}

// VerifyQuote verifies a raw quote and returns its claims.
func (v *Verifier) VerifyQuote(ctx context.Context, rawQuote []byte, expected verifier.Expected) (verifier.Claims, error) {
	q, err := ParseQuote(rawQuote)
	if err != nil {
		return nil, err
	}
	res, err := v.dcap.Verify(ctx, &q.Quote, evaluateTCB)
	if err != nil {
		return nil, err
	}
	if err := v.checkEnclave(&q.Body); err != nil {
		return nil, err
	}
	if err := checkBindings(&q.Body, expected); err != nil {
		return nil, err
	}
	claims := quoteClaims(q, &res.Chain.Platform)
	dcap.AddClaims(claims, res)
	return claims, nil
}

// Enclave attribute flags (SGX SECS ATTRIBUTES, low 64 bits).
const (
	attrInit  = 1 << 0
	attrDebug = 1 << 1
)

func (v *Verifier) checkEnclave(r *dcap.EnclaveReport) error {
	flags := r.Attributes[0]
	if flags&attrInit == 0 {
		return fmt.Errorf("%w: attributes %x", ErrEnclaveNotInitialized, r.Attributes[:8])
	}
	if flags&attrDebug != 0 && !v.allowDebug {
		return fmt.Errorf("%w: MRENCLAVE %x", ErrDebugEnclave, r.MrEnclave)
	}
	return nil
}

func checkBindings(r *dcap.EnclaveReport, expected verifier.Expected) error {
	if err := verifier.CheckReportData(r.ReportData[:], expected.ReportData); err != nil {
		return fmt.Errorf("sgx: REPORT_DATA %x: %w", r.ReportData, err)
	}
	if err := verifier.CheckInitData(r.ConfigID[:], expected.InitDataDigest); err != nil {
		return fmt.Errorf("sgx: CONFIGID %x: %w", r.ConfigID, err)
	}
	return nil
}

// evaluateTCB follows the SGX path of Intel's quote verification library:
// the first TCB level the PCK certificate's TCB reaches gives the
// platform's status, which the quoting enclave's status then folds into.
func evaluateTCB(r *dcap.Result) (*dcap.TCBResult, error) {
	p, levels := &r.Chain.Platform, r.Collateral.TCBInfo.TcbLevels
	for i := range levels {
		l := &levels[i]
		if !dcap.SGXReaches(p, l) {
			continue
		}
		status := dcap.ConvergeQE(string(l.TcbStatus), dcap.QEStatus(r.QELevel))
		if status == dcap.StatusRevoked {
			return nil, fmt.Errorf("%w: TCB level %s", dcap.ErrTCBRevoked, l.TcbDate)
		}
		return &dcap.TCBResult{
			Status:     status,
			Date:       dcap.EarliestDate(l, r.QELevel),
			Advisories: dcap.Advisories(l, r.QELevel),
		}, nil
	}
	return nil, fmt.Errorf("%w: PCK TCB %x pcesvn %d", dcap.ErrTCBNotSupported, p.SGXTCB, p.PCESVN)
}

// SGX's own errors; those of DCAP quote verification are the dcap
// package's. Each wraps one of the verifier package's shared errors.
var (
	ErrEvidenceEncoding      = fmt.Errorf("%w: sgx evidence is not the expected JSON/base64", verifier.ErrMalformedEvidence)
	ErrEnclaveNotInitialized = fmt.Errorf("%w: enclave report without the INIT attribute", verifier.ErrUnexpectedTeeConfig)
	ErrDebugEnclave          = fmt.Errorf("%w: enclave runs in debug mode", verifier.ErrUnexpectedTeeConfig)
)
