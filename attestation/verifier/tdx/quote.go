package tdx

import (
	"encoding/binary"
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// Sizes and constants of the TDX DCAP quote (Intel TDX DCAP Quoting Library
// API, quote format v4 and v5).
const (
	td10BodySize = 584
	td15BodySize = 648

	bodyTypeTD10 = 2
	bodyTypeTD15 = 3
)

// Header is the quote header common to quote v4 and v5; Reserved holds the
// QE and PCE SVNs, which Trustee reports as "reserved".
type Header = dcap.Header

// Body is the TD report body. TeeTCBSVN2 and MrServiceTD are only set for a
// TD 1.5 body (quote v5, body type 3).
type Body struct {
	TeeTCBSVN      [16]byte
	MrSeam         [48]byte
	MrSignerSeam   [48]byte
	SeamAttributes [8]byte
	TDAttributes   [8]byte
	XFAM           [8]byte
	MrTD           [48]byte
	MrConfigID     [48]byte
	MrOwner        [48]byte
	MrOwnerConfig  [48]byte
	RTMR           [4][48]byte
	ReportData     [64]byte
	TeeTCBSVN2     [16]byte
	MrServiceTD    [48]byte
}

// EnclaveReport is the SGX report of the quoting enclave.
type EnclaveReport = dcap.EnclaveReport

// Quote is a parsed TDX quote. Byte slices alias the parsed input.
type Quote struct {
	dcap.Quote
	BodyType uint16 // bodyTypeTD10 or bodyTypeTD15; always TD10 for v4
	BodySize uint32 // the v5 body size field; td10BodySize for v4
	Body     Body
}

// ParseQuote parses a TDX quote v4 or v5. Bytes after the quote's signature
// data are ignored: guests often hand over a fixed-size buffer.
func ParseQuote(b []byte) (*Quote, error) {
	q := &Quote{}
	if err := q.Quote.Parse(b, q.parseBody); err != nil {
		return nil, err
	}
	return q, nil
}

// parseBody checks the header is a TDX quote's and reads the TD report
// body.
func (q *Quote) parseBody(h *dcap.Header, b []byte) (int, error) {
	if err := h.Expect(4, 5, dcap.TeeTypeTDX); err != nil {
		return 0, err
	}
	off := dcap.HeaderSize
	q.BodyType, q.BodySize = bodyTypeTD10, td10BodySize
	if h.Version == 5 {
		if len(b) < off+6 {
			return 0, fmt.Errorf("%w: truncated v5 body descriptor", dcap.ErrQuoteFormat)
		}
		q.BodyType = binary.LittleEndian.Uint16(b[off:])
		q.BodySize = binary.LittleEndian.Uint32(b[off+2:])
		off += 6
		want, err := bodySize(q.BodyType)
		if err != nil {
			return 0, err
		}
		if q.BodySize != want {
			return 0, fmt.Errorf("%w: body type %d has size %d, want %d", dcap.ErrQuoteFormat, q.BodyType, q.BodySize, want)
		}
	}
	end := off + int(q.BodySize)
	if len(b) < end {
		return 0, fmt.Errorf("%w: truncated TD report body", dcap.ErrQuoteFormat)
	}
	parseTDReport(&q.Body, b[off:end])
	return end, nil
}

func bodySize(bodyType uint16) (uint32, error) {
	switch bodyType {
	case bodyTypeTD10:
		return td10BodySize, nil
	case bodyTypeTD15:
		return td15BodySize, nil
	}
	return 0, fmt.Errorf("%w: v5 body type %d is not a TD report", dcap.ErrTeeType, bodyType)
}

func parseTDReport(body *Body, b []byte) {
	r := fieldReader(b)
	r.read(body.TeeTCBSVN[:])
	r.read(body.MrSeam[:])
	r.read(body.MrSignerSeam[:])
	r.read(body.SeamAttributes[:])
	r.read(body.TDAttributes[:])
	r.read(body.XFAM[:])
	r.read(body.MrTD[:])
	r.read(body.MrConfigID[:])
	r.read(body.MrOwner[:])
	r.read(body.MrOwnerConfig[:])
	for i := range body.RTMR {
		r.read(body.RTMR[i][:])
	}
	r.read(body.ReportData[:])
	if len(r) > 0 {
		r.read(body.TeeTCBSVN2[:])
		r.read(body.MrServiceTD[:])
	}
}

// fieldReader copies consecutive fixed-size fields out of a buffer whose
// length the caller has already checked.
type fieldReader []byte

func (r *fieldReader) read(dst []byte) {
	copy(dst, *r)
	*r = (*r)[len(dst):]
}
