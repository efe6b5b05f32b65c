package azvtpm

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
)

// TPMQuote is a vTPM quote: the bare RSA signature, the marshalled
// TPMS_ATTEST and the SHA-256 PCR bank (index = PCR).
type TPMQuote struct {
	Signature, Message []byte
	PCRs               [][]byte
}

// Evidence is Trustee's Azure vTPM evidence of any version, decoded.
type Evidence struct {
	Version   int
	TPMQuote  TPMQuote
	HCLReport []byte
	// VCEK is az-snp-vtpm's endorsement key, DER.
	VCEK []byte
	// TDQuote is az-tdx-vtpm's TD quote.
	TDQuote []byte
}

// Version 0 carries bytes as JSON arrays of numbers, the SNP flavour's
// quote as "quote" and its HCL report as "report", and a PEM VCEK.
type quoteV0 struct {
	Signature []byte   `json:"signature"`
	Message   []byte   `json:"message"`
	PCRs      [][]byte `json:"pcrs"`
}

type evidenceV0 struct {
	Quote     *quoteV0 `json:"quote"`
	TPMQuote  *quoteV0 `json:"tpm_quote"`
	Report    []byte   `json:"report"`
	HCLReport []byte   `json:"hcl_report"`
	VCEK      string   `json:"vcek"`
	TDQuote   []byte   `json:"td_quote"`
}

// Versions 1 and 2 carry the quote in hex and the rest in URL-safe base64.
type evidenceV1 struct {
	Version  int `json:"version"`
	TPMQuote struct {
		Signature string   `json:"signature"`
		Message   string   `json:"message"`
		PCRs      []string `json:"pcrs"`
	} `json:"tpm_quote"`
	HCLReport string `json:"hcl_report"`
	VCEK      string `json:"vcek"`
	TDQuote   string `json:"td_quote"`
}

// ParseEvidence decodes evidence of version 0, 1 or 2.
func ParseEvidence(raw []byte) (*Evidence, error) {
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEvidenceEncoding, err)
	}
	var ev *Evidence
	var err error
	if probe.Version == nil {
		ev, err = parseV0(raw)
	} else {
		ev, err = parseV1(raw)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEvidenceEncoding, err)
	}
	return ev, nil
}

func parseV0(raw []byte) (*Evidence, error) {
	var v evidenceV0
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	q := v.Quote
	if q == nil {
		q = v.TPMQuote
	}
	if q == nil {
		return nil, fmt.Errorf("no quote")
	}
	ev := &Evidence{TPMQuote: TPMQuote{Signature: q.Signature, Message: q.Message, PCRs: q.PCRs},
		HCLReport: v.Report, TDQuote: v.TDQuote}
	if ev.HCLReport == nil {
		ev.HCLReport = v.HCLReport
	}
	if v.VCEK != "" {
		block, _ := pem.Decode([]byte(v.VCEK))
		if block == nil {
			return nil, fmt.Errorf("vcek is not PEM")
		}
		ev.VCEK = block.Bytes
	}
	return ev, nil
}

func parseV1(raw []byte) (*Evidence, error) {
	var v evidenceV1
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	if v.Version != 1 && v.Version != 2 {
		return nil, fmt.Errorf("version %d", v.Version)
	}
	ev := &Evidence{Version: v.Version}
	var err error
	for _, f := range []struct {
		name, in string
		out      *[]byte
		decode   func(string) ([]byte, error)
	}{
		{"tpm_quote.signature", v.TPMQuote.Signature, &ev.TPMQuote.Signature, hex.DecodeString},
		{"tpm_quote.message", v.TPMQuote.Message, &ev.TPMQuote.Message, hex.DecodeString},
		{"hcl_report", v.HCLReport, &ev.HCLReport, unbase64URL},
		{"vcek", v.VCEK, &ev.VCEK, unbase64URL},
		{"td_quote", v.TDQuote, &ev.TDQuote, unbase64URL},
	} {
		if *f.out, err = f.decode(f.in); err != nil {
			return nil, fmt.Errorf("%s: %v", f.name, err)
		}
	}
	for i, p := range v.TPMQuote.PCRs {
		pcr, err := hex.DecodeString(p)
		if err != nil {
			return nil, fmt.Errorf("tpm_quote.pcrs[%d]: %v", i, err)
		}
		ev.TPMQuote.PCRs = append(ev.TPMQuote.PCRs, pcr)
	}
	return ev, nil
}

// unbase64URL decodes URL-safe base64, padded or not.
func unbase64URL(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
