// Package aztdxvtpm collects the evidence of Azure TDX confidential VMs
// (az-tdx-vtpm) as guest-components does: the vTPM half (azvtpm) and the
// TD quote Azure's instance metadata service makes of the TD report in the
// HCL report, in Trustee's evidence JSON version 2.
package aztdxvtpm

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	vazvtpm "github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/azvtpm"
	"github.com/cocoon-cc/cocoon/protocol"
)

// quotePath is where IMDS turns a TD report into a quote.
const quotePath = "/acc/tdquote"

// Open opens the vTPM for az-tdx-vtpm evidence.
func Open(o azvtpm.Options) (*azvtpm.Attester, error) {
	return azvtpm.NewAttester(o, tdQuote{})
}

// tdQuote adds the TD quote IMDS makes of the HCL report's TD report.
type tdQuote struct{}

func (tdQuote) Tee() protocol.Tee { return protocol.TeeAzTDXvTPM }

func (tdQuote) Member(ctx context.Context, v *azvtpm.VTPM, c *azvtpm.Collected) (string, []byte, error) {
	hcl, err := vazvtpm.ParseHCLReport(c.HCLReport)
	if err != nil {
		return "", nil, err
	}
	if hcl.Type != vazvtpm.ReportTDX {
		return "", nil, fmt.Errorf("aztdxvtpm: the HCL report holds no TD report (type %d)", hcl.Type)
	}
	var rsp struct {
		Quote string `json:"quote"`
	}
	req := map[string]string{"report": base64.RawURLEncoding.EncodeToString(hcl.HWReport)}
	if err := v.IMDS(ctx, quotePath, req, &rsp); err != nil {
		return "", nil, err
	}
	quote, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(rsp.Quote, "="))
	if err != nil {
		return "", nil, fmt.Errorf("aztdxvtpm: IMDS quote: %w", err)
	}
	return "td_quote", quote, nil
}
