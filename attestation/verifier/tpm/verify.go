// Package tpm verifies the evidence of a guest whose root of trust is a TPM
// 2.0 (a vTPM in the pod VM): a TPM2_Quote over the SHA-256 PCR bank, signed
// by an attestation key (AK), as guest-components' TPM attester produces it
// and Trustee's TPM verifier consumes it.
//
// Bindings, as upstream defines them:
//   - report data: the quote's qualifying data (extraData) is the expected
//     report data fitted to 32 bytes, so a SHA-384 digest contributes its
//     first 32 bytes (see Nonce);
//   - initdata: the guest extends the digest, fitted to 32 bytes, into PCR 8
//     of the SHA-256 bank once, so PCR 8 must equal SHA-256(0^32 || digest)
//     (see ReplayInitData).
//
// The AK is whatever key the evidence names: without Options.TrustedAKs any
// key that signed a consistent quote passes, and the attestation policy must
// check the "ak_public" claim against its "trusted_aks" reference values, as
// Trustee's default policy does.
package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// NonceSize is the width of the quote's qualifying data: guest-components
// and Trustee both fit the report data to 32 bytes.
const NonceSize = 32

// InitDataPCR is the PCR the guest extends the initdata digest into.
const InitDataPCR = 8

// Errors of the individual checks; each wraps the shared verifier error
// named in its comment.
var (
	// ErrUntrustedAK wraps verifier.ErrEndorsement.
	ErrUntrustedAK = fmt.Errorf("%w: tpm: AK is not trusted", verifier.ErrEndorsement)
	// ErrQuoteSignature wraps verifier.ErrSignature.
	ErrQuoteSignature = fmt.Errorf("%w: tpm: quote signature", verifier.ErrSignature)
	// ErrPCRDigest wraps verifier.ErrSignature: the reported PCR values are
	// not the ones the TPM signed.
	ErrPCRDigest = fmt.Errorf("%w: tpm: PCR values do not match the quoted digest", verifier.ErrSignature)
	// ErrNonce wraps verifier.ErrReportDataMismatch.
	ErrNonce = fmt.Errorf("%w: tpm: quote nonce", verifier.ErrReportDataMismatch)
	// ErrInitDataPCR wraps verifier.ErrInitDataMismatch.
	ErrInitDataPCR = fmt.Errorf("%w: tpm: PCR %d", verifier.ErrInitDataMismatch, InitDataPCR)
)

// TrustedAK is an enrolled attestation key.
type TrustedAK struct {
	// Key is an *rsa.PublicKey or *ecdsa.PublicKey.
	Key crypto.PublicKey
	// NotAfter ends the enrolment; the zero time never ends it.
	NotAfter time.Time
}

// Options configure a Verifier.
type Options struct {
	// TrustedAKs, when not empty, are the only AKs whose quotes pass.
	TrustedAKs []TrustedAK
	// Now is the clock enrolments are checked against; nil means time.Now.
	Now func() time.Time
}

// Verifier implements verifier.Verifier for the "tpm" TEE.
type Verifier struct {
	opts Options
}

// New returns a Verifier.
func New(opts Options) *Verifier {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Verifier{opts: opts}
}

// Evaluate parses and verifies the evidence and returns its claims with the
// class "cpu".
func (v *Verifier) Evaluate(_ context.Context, raw json.RawMessage, want verifier.Expected) ([]verifier.TeeClaims, error) {
	rep, err := ParseEvidence(raw)
	if err != nil {
		return nil, err
	}
	if err := v.Verify(rep, want); err != nil {
		return nil, err
	}
	return verifier.CPU(Claims(rep), nil)
}

// Verify runs every check on parsed evidence.
func (v *Verifier) Verify(rep *Report, want verifier.Expected) error {
	if err := v.checkAK(rep); err != nil {
		return err
	}
	if err := VerifyQuote(rep); err != nil {
		return err
	}
	if err := checkNonce(rep.Attest.ExtraData, want.ReportData); err != nil {
		return err
	}
	return CheckInitData(rep, want.InitDataDigest)
}

// VerifyQuote checks what a quote proves by itself: the AK signed it and
// the reported PCR values hash to the quoted digest.
func VerifyQuote(rep *Report) error {
	if err := checkSignature(rep); err != nil {
		return err
	}
	return checkPCRDigest(rep)
}

// RSASSASHA256 is the TPMT_SIGNATURE of an RSA AK's SHA-256 signature
// given as its bare bytes, as Azure's vTPM evidence carries it.
func RSASSASHA256(sig []byte) *Signature {
	return &Signature{Alg: algRSASSA, Hash: crypto.SHA256, RSA: sig}
}

func (v *Verifier) checkAK(rep *Report) error {
	if len(v.opts.TrustedAKs) == 0 {
		return nil
	}
	now := v.opts.Now()
	for _, t := range v.opts.TrustedAKs {
		if k, ok := t.Key.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(rep.AK) {
			continue
		}
		if !t.NotAfter.IsZero() && now.After(t.NotAfter) {
			return fmt.Errorf("%w: enrolment ended %s", ErrUntrustedAK, t.NotAfter.Format(time.RFC3339))
		}
		return nil
	}
	return ErrUntrustedAK
}

func checkSignature(rep *Report) error {
	sig := rep.Signature
	h := sig.Hash.New()
	h.Write(rep.Message)
	digest := h.Sum(nil)
	var err error
	switch key := rep.AK.(type) {
	case *rsa.PublicKey:
		if sig.Alg != algRSASSA {
			return fmt.Errorf("%w: RSA AK with signature scheme %#x", ErrQuoteSignature, sig.Alg)
		}
		err = rsa.VerifyPKCS1v15(key, sig.Hash, digest, sig.RSA)
	case *ecdsa.PublicKey:
		if sig.Alg != algECDSA || !ecdsa.Verify(key, digest, sig.R, sig.S) {
			err = errors.New("ECDSA verification failed")
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrQuoteSignature, err)
	}
	return nil
}

// checkPCRDigest recomputes the TPM's pcrDigest: the signing scheme's hash
// over the selected PCR values concatenated in ascending index order.
func checkPCRDigest(rep *Report) error {
	h := rep.Signature.Hash.New()
	for _, i := range rep.Quoted() {
		h.Write(rep.PCRs[i])
	}
	if !bytes.Equal(h.Sum(nil), rep.Attest.PCRDigest) {
		return ErrPCRDigest
	}
	return nil
}

// Nonce is the qualifying data a quote bound to reportData carries.
func Nonce(reportData []byte) []byte {
	return verifier.Fit(reportData, NonceSize)
}

func checkNonce(extra, reportData []byte) error {
	if reportData == nil {
		return nil
	}
	if len(extra) != NonceSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrNonce, len(extra), NonceSize)
	}
	if !bytes.Equal(extra, Nonce(reportData)) {
		return ErrNonce
	}
	return nil
}

// InitDataExtension is the SHA-256 digest the guest extends into PCR 8 for
// an initdata digest of any algorithm.
func InitDataExtension(digest []byte) []byte {
	return verifier.Fit(digest, PCRSize)
}

// ReplayInitData is PCR 8 after a reset and the initdata extension alone.
func ReplayInitData(digest []byte) []byte {
	pcr := sha256.New()
	pcr.Write(make([]byte, PCRSize))
	pcr.Write(InitDataExtension(digest))
	return pcr.Sum(nil)
}

// CheckInitData checks PCR 8 holds the extension of the initdata digest
// alone; nothing is checked when digest is nil.
func CheckInitData(rep *Report, digest []byte) error {
	if digest == nil {
		return nil
	}
	pcr, ok := rep.QuotedPCR(InitDataPCR)
	if !ok {
		return fmt.Errorf("%w: not quoted", ErrInitDataPCR)
	}
	if !bytes.Equal(pcr, ReplayInitData(digest)) {
		return ErrInitDataPCR
	}
	return nil
}

// Claims are the facts of verified evidence, named as Trustee's TPM
// verifier names them ("pcr00".."pcr23", "ak_public", "report_data",
// "init_data") plus the quote's clock information. Only quoted PCRs appear:
// the others are not covered by the signature.
func Claims(rep *Report) verifier.Claims {
	a := rep.Attest
	c := verifier.Claims{
		"ak_public":        rep.AKPublic,
		"report_data":      hex.EncodeToString(a.ExtraData),
		"clock":            a.Clock,
		"reset_count":      a.ResetCount,
		"restart_count":    a.RestartCount,
		"safe":             a.Safe,
		"firmware_version": a.FirmwareVersion,
	}
	for _, i := range rep.Quoted() {
		c[fmt.Sprintf("pcr%02d", i)] = hex.EncodeToString(rep.PCRs[i])
	}
	if pcr, ok := rep.QuotedPCR(InitDataPCR); ok {
		c["init_data"] = hex.EncodeToString(pcr)
	}
	return c
}
