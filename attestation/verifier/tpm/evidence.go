package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Evidence is the TPM evidence as guest-components' TPM attester writes it
// and Trustee's TPM verifier reads it.
type Evidence struct {
	TPMQuote Quote `json:"tpm_quote"`
	// AKPublic is the standard base64 of the AK's DER SubjectPublicKeyInfo.
	AKPublic string `json:"ak_public"`
}

// Quote carries a TPM2_Quote and the PCR values it covers.
type Quote struct {
	// Signature is the standard base64 of a marshalled TPMT_SIGNATURE.
	Signature string `json:"signature"`
	// Message is the standard base64 of the marshalled TPMS_ATTEST.
	Message string `json:"message"`
	// PCRs are the hex SHA-256 bank values; the list index is the PCR index.
	PCRs []string `json:"pcrs"`
}

// Report is evidence with every field decoded but nothing verified.
type Report struct {
	// AKPublic is the AK as sent: policies compare it with "trusted_aks".
	AKPublic  string
	AK        crypto.PublicKey
	Message   []byte
	Attest    *Attest
	Signature *Signature
	PCRs      [][]byte
}

// PCRSize is the width of a SHA-256 PCR, the only bank the wire carries.
const PCRSize = 32

// minRSABits refuses AKs small enough to factor.
const minRSABits = 2048

// Errors of ParseEvidence besides the TPM structure ones; all wrap
// verifier.ErrMalformedEvidence.
var (
	ErrEncoding  = errors.New("tpm: bad field encoding")
	ErrAKPublic  = errors.New("tpm: unusable AK public key")
	ErrSelection = errors.New("tpm: unsupported PCR selection")
)

// ParseEvidence decodes the evidence JSON and the TPM structures inside.
func ParseEvidence(raw []byte) (*Report, error) {
	var ev Evidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, malformed(fmt.Errorf("%w: %w", ErrEncoding, err))
	}
	rep, err := decode(&ev)
	if err != nil {
		return nil, malformed(err)
	}
	return rep, nil
}

func malformed(err error) error {
	return fmt.Errorf("%w: %w", verifier.ErrMalformedEvidence, err)
}

func decode(ev *Evidence) (*Report, error) {
	rep := &Report{AKPublic: ev.AKPublic}
	var err error
	if rep.AK, err = parseAK(ev.AKPublic); err != nil {
		return nil, err
	}
	if rep.Message, err = unbase64("message", ev.TPMQuote.Message); err != nil {
		return nil, err
	}
	if rep.Attest, err = ParseAttest(rep.Message); err != nil {
		return nil, fmt.Errorf("message: %w", err)
	}
	sig, err := unbase64("signature", ev.TPMQuote.Signature)
	if err != nil {
		return nil, err
	}
	if rep.Signature, err = ParseSignature(sig); err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	if rep.PCRs, err = parsePCRs(ev.TPMQuote.PCRs); err != nil {
		return nil, err
	}
	if err := checkSelection(rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// NewReport assembles a report from a quote's parts as other evidence
// formats carry them (Azure's vTPM evidence), checking them as
// ParseEvidence does.
func NewReport(ak crypto.PublicKey, message []byte, sig *Signature, pcrs [][]byte) (*Report, error) {
	rep := &Report{AK: ak, Message: message, Signature: sig, PCRs: pcrs}
	var err error
	if rep.Attest, err = ParseAttest(message); err != nil {
		return nil, malformed(fmt.Errorf("message: %w", err))
	}
	for i, pcr := range pcrs {
		if len(pcr) != PCRSize {
			return nil, malformed(fmt.Errorf("%w: PCR %d has %d bytes", ErrEncoding, i, len(pcr)))
		}
	}
	if err := checkSelection(rep); err != nil {
		return nil, malformed(err)
	}
	return rep, nil
}

// checkSelection accepts quotes over the SHA-256 bank alone, the only bank
// whose values the evidence can carry, and only over PCRs it reports.
func checkSelection(rep *Report) error {
	sel := rep.Attest.Selection
	if len(sel) != 1 || sel[0].Hash != crypto.SHA256 || len(sel[0].PCRs) == 0 {
		return fmt.Errorf("%w: quote must select PCRs of the SHA-256 bank only", ErrSelection)
	}
	if last := sel[0].PCRs[len(sel[0].PCRs)-1]; last >= len(rep.PCRs) {
		return fmt.Errorf("%w: PCR %d is quoted but not reported", ErrSelection, last)
	}
	return nil
}

// Quoted lists the indices of the PCRs the quote covers, ascending.
func (r *Report) Quoted() []int {
	return r.Attest.Selection[0].PCRs
}

// QuotedPCR returns PCR i's reported value if the quote covers it.
func (r *Report) QuotedPCR(i int) ([]byte, bool) {
	if !slices.Contains(r.Quoted(), i) {
		return nil, false
	}
	return r.PCRs[i], true
}

func unbase64(field, s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrEncoding, field, err)
	}
	return b, nil
}

func parseAK(s string) (crypto.PublicKey, error) {
	der, err := unbase64("ak_public", s)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAKPublic, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("%w: %d-bit RSA", ErrAKPublic, k.N.BitLen())
		}
	case *ecdsa.PublicKey:
	default:
		return nil, fmt.Errorf("%w: %T", ErrAKPublic, key)
	}
	return key, nil
}

func parsePCRs(hexes []string) ([][]byte, error) {
	pcrs := make([][]byte, len(hexes))
	for i, h := range hexes {
		v, err := hex.DecodeString(h)
		if err != nil || len(v) != PCRSize {
			return nil, fmt.Errorf("%w: pcrs[%d] is not %d hex bytes", ErrEncoding, i, PCRSize)
		}
		pcrs[i] = v
	}
	return pcrs, nil
}
