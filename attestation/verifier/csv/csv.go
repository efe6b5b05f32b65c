// Package csv verifies Hygon CSV (China Secure Virtualization) evidence:
// the attestation report the PSP signs with the chip's PEK, the chain
// PEK → CEK → HSK → HRK (Hygon's root, built in) of SM2 certificates, the
// report's signer block, and the binding of the report to the runtime
// data. It returns the claims Trustee's CSV verifier returns, so Trustee's
// policies apply unchanged.
//
// The evidence carries the PEK; the HSK and CEK come from the evidence
// when it has them, else from a certificate directory (Trustee's offline
// layout), else from Hygon's KDS. Hygon's certificates have no validity
// period and Hygon publishes no revocation list, so there is neither to
// check.
package csv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tdx"
)

// DefaultKDSURL is Hygon's key distribution service; the chip's serial
// number is appended.
const DefaultKDSURL = "https://cert.hygon.cn/hsk_cek?snumber="

// Options configure a Verifier. The zero value trusts Hygon's HRK and
// fetches missing HSK/CEK pairs from Hygon's KDS.
type Options struct {
	// CertDir holds HSK/CEK pairs as Hygon's KDS serves them (the HSK's
	// 832 bytes then the CEK's 2084), at hsk_cek/<chip>/hsk_cek.cert as
	// Trustee's /opt/hygon/csv does, or at hsk_cek.cert for any chip.
	CertDir string
	// CacheDir keeps HSK/CEK pairs fetched from the KDS, in CertDir's
	// layout. Empty: memory only.
	CacheDir string
	// DisableKDS keeps the verifier off the network.
	DisableKDS bool
	// KDSURL replaces DefaultKDSURL.
	KDSURL string
	// HTTPClient fetches from the KDS. Default: a 30 s timeout client.
	HTTPClient *http.Client
	// HRK replaces Hygon's root certificate (832 bytes): for test chains.
	HRK []byte
}

// Verifier verifies CSV evidence. It is safe for concurrent use.
type Verifier struct {
	opts  Options
	hrk   *caCert
	kds   *kdsClient                                   // nil when DisableKDS
	valid *verifier.Cache[[sha256.Size]byte, *csvCert] // verified chains, by digest of HSK ‖ CEK ‖ PEK
}

// maxChains bounds the verified-chain cache (one entry per chip and PEK).
const maxChains = 4096

// New returns a Verifier.
func New(opts Options) (*Verifier, error) {
	v := &Verifier{opts: opts, valid: verifier.NewCache[[sha256.Size]byte, *csvCert](maxChains)}
	var err error
	if opts.HRK == nil {
		v.hrk, err = builtinHRK()
	} else if v.hrk, err = parseCACert(opts.HRK); err == nil {
		err = checkRoot(v.hrk)
	}
	if err != nil {
		return nil, err
	}
	if !opts.DisableKDS {
		v.kds = newKDSClient(opts)
	}
	return v, nil
}

// Evaluate implements verifier.Verifier for Trustee's JSON evidence.
func (v *Verifier) Evaluate(ctx context.Context, evidence json.RawMessage, want verifier.Expected) ([]verifier.TeeClaims, error) {
	ev, err := ParseEvidence(evidence)
	if err != nil {
		return nil, err
	}
	return verifier.CPU(v.Verify(ctx, ev, want))
}

// Verify runs the checks in Trustee's order (chain, report signature,
// report data, event log), with the signer block besides. CSV has
// no initdata field: an expected initdata digest is not checked, as
// Trustee does not.
func (v *Verifier) Verify(ctx context.Context, ev *Evidence, want verifier.Expected) (verifier.Claims, error) {
	pek, err := v.endorse(ctx, ev)
	if err != nil {
		return nil, err
	}
	if err := checkReport(pek, ev, want); err != nil {
		return nil, err
	}
	claims := Claims(ev)
	if ev.EventLog != nil && ev.Report.Version == 2 {
		events, err := replayEventLog(ev.EventLog, ev.Report)
		if err != nil {
			return nil, err
		}
		claims["uefi_event_logs"] = events
	}
	return claims, nil
}

// replayEventLog parses the CC event log and replays its SM3 digests of
// MR indexes 1 to 4 against RTMR1 to RTMR4, as Trustee does for version 2
// reports (version 1 reports have no RTMRs; Trustee ignores their log).
func replayEventLog(b []byte, r *Report) ([]any, error) {
	log, err := tdx.ParseEventLog(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEventLog, err)
	}
	regs, err := log.Replay(tdx.AlgSM3)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEventLog, err)
	}
	for i, reg := range regs {
		if !bytes.Equal(reg, r.RTMR[i+1]) {
			return nil, fmt.Errorf("%w: replayed RTMR%d %x, report has %x", ErrEventLog, i+1, reg, r.RTMR[i+1])
		}
	}
	return log.Claims(), nil
}

// checkReport checks what the PEK vouches for: the report's signature,
// the signer block and the report data.
func checkReport(pek *csvCert, ev *Evidence, want verifier.Expected) error {
	r := ev.Report
	if r.SigUsage != usagePEK || r.SigAlgo != algoSM2SA {
		return fmt.Errorf("%w: report signed with usage %#x algorithm %#x", ErrCertUsage, r.SigUsage, r.SigAlgo)
	}
	if !pek.key.verify(r.signed, r.sig) {
		return ErrReportSignature
	}
	if err := r.checkSigner(ev.PEK, ev.Serial); err != nil {
		return err
	}
	if err := verifier.CheckReportData(r.ReportData, want.ReportData); err != nil {
		return fmt.Errorf("csv: %w: report has %x", err, r.ReportData)
	}
	return nil
}

// endorse returns the evidence's PEK once its chain to the HRK verifies.
func (v *Verifier) endorse(ctx context.Context, ev *Evidence) (*csvCert, error) {
	hsk, cek := ev.HSK, ev.CEK
	if hsk == nil {
		var err error
		if hsk, cek, err = v.hskCEK(ctx, ev.ChipID()); err != nil {
			return nil, err
		}
	}
	h := sha256.New()
	h.Write(hsk)
	h.Write(cek)
	h.Write(ev.PEK)
	var key [sha256.Size]byte
	h.Sum(key[:0])
	if pek, ok := v.valid.Get(key); ok {
		return pek, nil
	}
	pek, err := v.verifyChain(hsk, cek, ev.PEK)
	if err != nil {
		return nil, err
	}
	v.valid.Put(key, pek)
	return pek, nil
}

func (v *Verifier) verifyChain(hskRaw, cekRaw, pekRaw []byte) (*csvCert, error) {
	hsk, err := parseCACert(hskRaw)
	if err != nil {
		return nil, fmt.Errorf("HSK: %w", err)
	}
	cek, err := parseCSVCert(cekRaw)
	if err != nil {
		return nil, fmt.Errorf("CEK: %w", err)
	}
	pek, err := parseCSVCert(pekRaw)
	if err != nil {
		return nil, fmt.Errorf("PEK: %w", err)
	}
	if err := verifyChain(v.hrk, hsk, cek, pek); err != nil {
		return nil, err
	}
	return pek, nil
}
