// Package azvtpm collects what the evidence of Azure confidential VMs
// shares between SEV-SNP and TDX, as guest-components' Azure attesters do:
// the report data written to the vTPM's report-data NV index, the HCL
// report the paravisor then renews in its own NV index (its runtime data
// carries the report data as user-data and the attestation key), and a
// quote of the SHA-256 PCRs by that key with the report data as nonce. It
// also probes whether the guest is an Azure confidential VM.
package azvtpm

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	vazvtpm "github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/tpm"
	"github.com/cocoon-cc/cocoon/protocol"
)

// The vTPM's fixed handles on Azure.
const (
	HCLReportIndex  = 0x01400001
	ReportDataIndex = 0x01400002
	AKHandle        = 0x81000003
)

// Options configure Open.
type Options struct {
	// TPM is the vTPM (tpm.Options.TPM).
	TPM string
	// IMDS is the base URL of Azure's instance metadata service, which
	// serves VCEKs and turns TD reports into quotes.
	// Default DefaultIMDS.
	IMDS string
	// Refresh is how long the paravisor takes to renew the HCL report
	// after report data is written; 3 s, as Azure's tooling waits, when 0.
	Refresh time.Duration
	// HTTP is the client for IMDS; a 30 s timeout when nil.
	HTTP *http.Client
}

// DefaultIMDS is Azure's link-local instance metadata service.
const DefaultIMDS = "http://169.254.169.254"

// VTPM is an open Azure vTPM.
type VTPM struct {
	tpm  *tpm.Attester
	opts Options
}

// Open opens the vTPM and its attestation key.
func Open(o Options) (*VTPM, error) {
	if o.IMDS == "" {
		o.IMDS = DefaultIMDS
	}
	if o.Refresh == 0 {
		o.Refresh = 3 * time.Second
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	t, err := tpm.Open(tpm.Options{TPM: o.TPM, AKHandle: AKHandle, AKAlgorithm: tpm.AKRSA})
	if err != nil {
		return nil, err
	}
	return &VTPM{tpm: t, opts: o}, nil
}

// Close releases the vTPM.
func (v *VTPM) Close() error { return v.tpm.Close() }

// AKPublic is the attestation key's public key.
func (v *VTPM) AKPublic() crypto.PublicKey { return v.tpm.AKPublic() }

// WriteNV writes an NV index of the vTPM (tpm.Attester.WriteNV).
func (v *VTPM) WriteNV(index uint32, data []byte) error { return v.tpm.WriteNV(index, data) }

// Collected is the vTPM half of Azure evidence.
type Collected struct {
	HCLReport []byte
	Quote     *tpm.Quote
}

// Collect has the paravisor renew the HCL report with reportData and
// quotes the PCRs with reportData as the nonce.
func (v *VTPM) Collect(ctx context.Context, reportData []byte) (*Collected, error) {
	if err := v.tpm.WriteNV(ReportDataIndex, reportData); err != nil {
		return nil, err
	}
	select {
	case <-time.After(v.opts.Refresh):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	hcl, err := v.tpm.ReadNV(HCLReportIndex)
	if err != nil {
		return nil, err
	}
	q, err := v.tpm.Quote(ctx, reportData)
	if err != nil {
		return nil, err
	}
	if q.Signature.RSA == nil {
		return nil, fmt.Errorf("azvtpm: the attestation key at %#x is not an RSA key", AKHandle)
	}
	return &Collected{HCLReport: hcl, Quote: q}, nil
}

// Evidence is Trustee's evidence JSON of version 2 with the hardware
// member (name: "vcek" or "td_quote") the flavour adds.
func (c *Collected) Evidence(name string, hardware []byte) (json.RawMessage, error) {
	pcrs := make([]string, len(c.Quote.PCRs))
	for i, p := range c.Quote.PCRs {
		pcrs[i] = hex.EncodeToString(p)
	}
	return json.Marshal(map[string]any{
		"version": 2,
		"tpm_quote": map[string]any{
			"signature": hex.EncodeToString(c.Quote.Signature.RSA),
			"message":   hex.EncodeToString(c.Quote.Message),
			"pcrs":      pcrs,
		},
		"hcl_report": base64.URLEncoding.EncodeToString(c.HCLReport),
		name:         base64.URLEncoding.EncodeToString(hardware),
	})
}

// Hardware is what one kind of Azure VM adds to the vTPM half.
type Hardware interface {
	Tee() protocol.Tee
	// Member returns the evidence member (name and bytes) that carries or
	// endorses the hardware report of the collected HCL report.
	Member(ctx context.Context, v *VTPM, c *Collected) (name string, value []byte, err error)
}

// Attester produces the evidence of one kind of Azure VM.
type Attester struct {
	*VTPM
	hw Hardware
}

// NewAttester opens the vTPM for hw's kind of evidence.
func NewAttester(o Options, hw Hardware) (*Attester, error) {
	v, err := Open(o)
	if err != nil {
		return nil, err
	}
	return &Attester{VTPM: v, hw: hw}, nil
}

// Tee implements attester.Attester.
func (a *Attester) Tee() protocol.Tee { return a.hw.Tee() }

// Evidence implements attester.Attester: Trustee's evidence version 2.
func (a *Attester) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	c, err := a.Collect(ctx, reportData)
	if err != nil {
		return nil, err
	}
	name, value, err := a.hw.Member(ctx, a.VTPM, c)
	if err != nil {
		return nil, err
	}
	return c.Evidence(name, value)
}

// Probe says which Azure TEE the guest is, from the HCL report in the
// TPM at path; false when it is no Azure confidential VM.
func Probe(path string) (protocol.Tee, bool) {
	b, err := tpm.ReadNVIndex(path, HCLReportIndex)
	if err != nil {
		return "", false
	}
	r, err := vazvtpm.ParseHCLReport(b)
	if err != nil {
		return "", false
	}
	switch r.Type {
	case vazvtpm.ReportSNP:
		return protocol.TeeAzSNPvTPM, true
	case vazvtpm.ReportTDX:
		return protocol.TeeAzTDXvTPM, true
	}
	return "", false
}

// maxIMDSResponse bounds what IMDS may make the guest read.
const maxIMDSResponse = 1 << 20

// IMDS calls Azure's instance metadata service: a GET when body is nil,
// else a POST of body as JSON; the JSON answer is decoded into out.
func (v *VTPM) IMDS(ctx context.Context, path string, body, out any) error {
	method, rd := http.MethodGet, io.Reader(nil)
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		method, rd = http.MethodPost, bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, v.opts.IMDS+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Metadata", "true")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rsp, err := v.opts.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("azvtpm: IMDS %s: %w", path, err)
	}
	defer rsp.Body.Close()
	if rsp.StatusCode != http.StatusOK {
		return fmt.Errorf("azvtpm: IMDS %s: %s", path, rsp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(rsp.Body, maxIMDSResponse)).Decode(out); err != nil {
		return fmt.Errorf("azvtpm: IMDS %s: %w", path, err)
	}
	return nil
}
