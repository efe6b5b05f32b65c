package sgx

import (
	"encoding/binary"
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// bodyTypeSGX is the v5 body descriptor of an SGX enclave report.
const bodyTypeSGX = 1

// Quote is a parsed SGX DCAP quote: v3, v4, or v5 with an SGX body. Byte
// slices alias the parsed input.
type Quote struct {
	dcap.Quote
	Body dcap.EnclaveReport
}

// ParseQuote parses an SGX quote. Bytes after the quote's signature data
// are ignored: enclaves often hand over a fixed-size buffer.
func ParseQuote(b []byte) (*Quote, error) {
	var q Quote
	err := q.Quote.Parse(b, q.parseBody)
	if err != nil {
		return nil, err
	}
	return &q, nil
}

// parseBody checks the header is an SGX quote's and reads its enclave
// report.
func (q *Quote) parseBody(h *dcap.Header, b []byte) (int, error) {
	if err := h.Expect(3, 5, dcap.TeeTypeSGX); err != nil {
		return 0, err
	}
	off := dcap.HeaderSize
	if h.Version == 5 {
		if len(b) < off+6 {
			return 0, fmt.Errorf("%w: truncated v5 body descriptor", dcap.ErrQuoteFormat)
		}
		typ, size := binary.LittleEndian.Uint16(b[off:]), binary.LittleEndian.Uint32(b[off+2:])
		if typ != bodyTypeSGX || size != dcap.EnclaveReportSize {
			return 0, fmt.Errorf("%w: v5 body type %d of %d bytes is not an SGX report", dcap.ErrTeeType, typ, size)
		}
		off += 6
	}
	end := off + dcap.EnclaveReportSize
	if len(b) < end {
		return 0, fmt.Errorf("%w: truncated enclave report", dcap.ErrQuoteFormat)
	}
	dcap.ParseEnclaveReport(&q.Body, b[off:end])
	return end, nil
}
