package dcaptest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// Region is a byte range of a quote and the errors a change in it may
// cause.
type Region struct {
	Name       string
	Start, End int
	Want       []error
}

// Regions maps a quote's layout, in order, to the checks that must catch a
// change to each byte.
type Regions []Region

// Add appends the next n bytes.
func (rs *Regions) Add(name string, n int, want ...error) {
	off := 0
	if len(*rs) > 0 {
		off = (*rs)[len(*rs)-1].End
	}
	*rs = append(*rs, Region{name, off, off + n, want})
}

// Header adds the 48-byte header; teeType is what catches a change to the
// tee_type word.
func (rs *Regions) Header(teeType error) {
	rs.Add("version", 2, verifier.ErrMalformedEvidence)
	rs.Add("attestation key type", 2, dcap.ErrAttestationKey)
	rs.Add("tee type", 4, teeType)
	rs.Add("QE and PCE SVN", 4, dcap.ErrQuoteSignature)
	rs.Add("QE vendor", 16, dcap.ErrQEVendor)
	rs.Add("user data", 20, dcap.ErrQuoteSignature)
}

// Signature adds the signature data of a quote of the given version.
func (rs *Regions) Signature(s *dcap.SignatureData, version uint16) {
	rs.Add("signature data size", 4, dcap.ErrQuoteFormat)
	rs.Add("quote signature", dcap.ECDSASize, dcap.ErrQuoteSignature)
	rs.Add("attestation key", dcap.ECDSASize, dcap.ErrQEReportData)
	if version >= 4 {
		rs.Add("certification data type", 2, dcap.ErrCertificationData)
		rs.Add("certification data size", 4, dcap.ErrQuoteFormat)
	}
	rs.Add("QE report", dcap.EnclaveReportSize, dcap.ErrQEReportSignature)
	rs.Add("QE report signature", dcap.ECDSASize, dcap.ErrQEReportSignature)
	rs.Add("QE auth data size", 2, dcap.ErrQuoteFormat)
	rs.Add("QE auth data", len(s.QEAuthData), dcap.ErrQEReportData)
	rs.Add("PCK chain type", 2, dcap.ErrCertificationData)
	rs.Add("PCK chain size", 4, dcap.ErrQuoteFormat)
	rs.Add("PCK chain", len(s.PCKChain), dcap.ErrPCKChainFormat, dcap.ErrPCKChain)
}

// TamperAll flips every byte of every region with 0xff, every third byte
// also with 0x01, and checks that check catches each change with one of
// the region's errors.
func TamperAll(t *testing.T, raw []byte, regions Regions, check func([]byte) error) {
	t.Helper()
	buf := bytes.Clone(raw)
	for _, r := range regions {
		for i := r.Start; i < r.End; i++ {
			for _, mask := range []byte{0xff, 0x01} {
				if mask == 0x01 && i%3 != 0 {
					continue
				}
				buf[i] ^= mask
				err := check(buf)
				buf[i] ^= mask
				if !isAny(err, r.Want) {
					t.Fatalf("%s byte %d ^ %#x: %v, want one of %v", r.Name, i-r.Start, mask, err, r.Want)
				}
			}
		}
	}
}

func isAny(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
