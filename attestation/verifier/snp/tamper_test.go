package snp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// classes are the shared errors; every rejection must carry one.
var classes = []error{
	verifier.ErrMalformedEvidence, verifier.ErrSignature, verifier.ErrEndorsement,
	verifier.ErrUnexpectedTeeConfig, verifier.ErrReportDataMismatch, verifier.ErrInitDataMismatch,
}

func classified(err error) bool {
	for _, c := range classes {
		if errors.Is(err, c) {
			return true
		}
	}
	return false
}

// region says what flipping a byte at off must give: ErrReportFormat for
// must-be-zero bytes, ErrReportSignature for plain signed data and for the
// signature, nil where several checks may fire first (version, policy,
// key info, CPUID).
func region(off int, version uint32) error {
	cpuidEnd := 0x188
	if version >= 3 {
		cpuidEnd = 0x18b
	}
	switch {
	case off < 0x04, off >= 0x08 && off < 0x10, off >= 0x48 && off < 0x4c, off >= 0x188 && off < cpuidEnd:
		return nil
	case off >= 0x4c && off < 0x50, off >= cpuidEnd && off < 0x1a0, off == 0x1eb, off == 0x1ef,
		off >= 0x208 && off < 0x2a0, off >= 0x2a0+0x90:
		return ErrReportFormat
	}
	return ErrReportSignature
}

// TestTamperedReports flips bit 0 and bit 7 of every byte of every real
// report and sends the result through the raw path, and the bit-0 flips
// through the JSON path too. Each change must be
// rejected for the reason the byte's role implies, never accepted, never
// panic.
func TestTamperedReports(t *testing.T) {
	for _, s := range samples(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			v := newVerifier(t, Options{DisableKDS: true, Now: at(s.now)})
			orig, err := ParseReport(s.raw)
			if err != nil {
				t.Fatal(err)
			}
			origJSON, _ := (&Evidence{Report: orig, Certs: s.certs}).MarshalJSON()
			version := binary.LittleEndian.Uint32(s.raw)
			for off := range s.raw {
				for _, mask := range []byte{0x01, 0x80} {
					raw := bytes.Clone(s.raw)
					raw[off] ^= mask
					where := fmt.Sprintf("byte %#x ^ %#x", off, mask)
					_, err := v.VerifyReport(ctx, raw, s.certs, verifier.Expected{})
					checkTampered(t, where, err, region(off, version), s.wantErr)
					if mask == 0x01 { // one bit per byte is enough to cover every JSON field
						checkTamperedJSON(t, v, where, raw, s, origJSON)
					}
				}
			}
		})
	}
}

// checkTampered wants err to be want (when set), and not the verdict on
// the untouched sample: the VLEK sample fails its VMPL check, which must not
// hide a change the signature check should have caught.
func checkTampered(t *testing.T, where string, err, want, untouched error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: accepted", where)
	case untouched != nil && errors.Is(err, untouched):
		t.Errorf("%s: only %v", where, err)
	case !classified(err):
		t.Errorf("%s: unclassified error %v", where, err)
	case want != nil && !errors.Is(err, want):
		t.Errorf("%s: %v, want %v", where, err, want)
	}
}

// checkTamperedJSON sends the change as JSON evidence. Reserved bytes have
// no JSON field, so a change there must leave the JSON, and the verdict,
// as they were.
func checkTamperedJSON(t *testing.T, v *Verifier, where string, raw []byte, s sample, origJSON []byte) {
	t.Helper()
	r, err := ParseReport(raw)
	if err != nil {
		return // the raw path covered it; such bytes cannot be built from JSON
	}
	ev, _ := (&Evidence{Report: r, Certs: s.certs}).MarshalJSON()
	_, err = v.Evaluate(ctx, ev, verifier.Expected{})
	if bytes.Equal(ev, origJSON) {
		if !errors.Is(err, s.wantErr) || (err == nil) != (s.wantErr == nil) {
			t.Errorf("%s (JSON unchanged): %v, want %v", where, err, s.wantErr)
		}
		return
	}
	checkTampered(t, where+" (JSON)", err, nil, s.wantErr)
}
