package tdx

import (
	"encoding/binary"
	"fmt"
)

// Sizes and constants of the TDX DCAP quote (Intel TDX DCAP Quoting Library
// API, quote format v4 and v5).
const (
	headerSize   = 48
	td10BodySize = 584
	td15BodySize = 648
	qeReportSize = 384
	ecdsaSize    = 64 // a raw P-256 signature r||s and a raw public key x||y

	teeTypeTDX      = 0x81
	attKeyECDSAP256 = 2
	bodyTypeTD10    = 2
	bodyTypeTD15    = 3
	certQEReport    = 6
	certPCKChain    = 5
)

// intelQEVendorID identifies quotes made by Intel's quoting enclave.
var intelQEVendorID = [16]byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}

// Header is the quote header common to quote v4 and v5.
type Header struct {
	Version    uint16
	AttKeyType uint16
	TeeType    uint32
	Reserved   [4]byte // QE SVN and PCE SVN; Trustee reports them as "reserved"
	VendorID   [16]byte
	UserData   [20]byte
}

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
type EnclaveReport struct {
	CPUSVN     [16]byte
	MiscSelect uint32
	Attributes [16]byte
	MrEnclave  [32]byte
	MrSigner   [32]byte
	ISVProdID  uint16
	ISVSVN     uint16
	ReportData [64]byte
}

// Quote is a parsed TDX quote. Byte slices alias the parsed input.
type Quote struct {
	Header   Header
	BodyType uint16 // bodyTypeTD10 or bodyTypeTD15; always TD10 for v4
	BodySize uint32 // the v5 body size field; td10BodySize for v4
	Body     Body

	// SignedData is the header and body, which the attestation key signs.
	SignedData     []byte
	Signature      []byte // raw r||s
	AttestationKey []byte // raw x||y on P-256

	QEReport          EnclaveReport
	RawQEReport       []byte // signed by the PCK key
	QEReportSignature []byte
	QEAuthData        []byte
	PCKChain          []byte // PEM: PCK leaf, platform/processor CA, root CA
}

// ParseQuote parses a TDX quote v4 or v5. Bytes after the quote's signature
// data are ignored: guests often hand over a fixed-size buffer.
func ParseQuote(b []byte) (*Quote, error) {
	q := &Quote{}
	if len(b) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes is shorter than a quote header", ErrQuoteFormat, len(b))
	}
	if err := parseHeader(&q.Header, b[:headerSize]); err != nil {
		return nil, err
	}
	end, err := q.parseBody(b)
	if err != nil {
		return nil, err
	}
	q.SignedData = b[:end]
	if err := q.parseSignatureData(b[end:]); err != nil {
		return nil, err
	}
	return q, nil
}

func parseHeader(h *Header, b []byte) error {
	h.Version = binary.LittleEndian.Uint16(b[0:])
	h.AttKeyType = binary.LittleEndian.Uint16(b[2:])
	h.TeeType = binary.LittleEndian.Uint32(b[4:])
	copy(h.Reserved[:], b[8:12])
	copy(h.VendorID[:], b[12:28])
	copy(h.UserData[:], b[28:48])
	switch {
	case h.Version != 4 && h.Version != 5:
		return fmt.Errorf("%w: %d", ErrQuoteVersion, h.Version)
	case h.TeeType != teeTypeTDX:
		return fmt.Errorf("%w: tee_type %#x", ErrTeeType, h.TeeType)
	case h.AttKeyType != attKeyECDSAP256:
		return fmt.Errorf("%w: attestation key type %d", ErrAttestationKey, h.AttKeyType)
	case h.VendorID != intelQEVendorID:
		return fmt.Errorf("%w: vendor id %x", ErrQEVendor, h.VendorID)
	}
	return nil
}

// parseBody reads the TD report body and returns where the signed data ends.
func (q *Quote) parseBody(b []byte) (int, error) {
	off := headerSize
	q.BodyType, q.BodySize = bodyTypeTD10, td10BodySize
	if q.Header.Version == 5 {
		if len(b) < off+6 {
			return 0, fmt.Errorf("%w: truncated v5 body descriptor", ErrQuoteFormat)
		}
		q.BodyType = binary.LittleEndian.Uint16(b[off:])
		q.BodySize = binary.LittleEndian.Uint32(b[off+2:])
		off += 6
		want, err := bodySize(q.BodyType)
		if err != nil {
			return 0, err
		}
		if q.BodySize != want {
			return 0, fmt.Errorf("%w: body type %d has size %d, want %d", ErrQuoteFormat, q.BodyType, q.BodySize, want)
		}
	}
	end := off + int(q.BodySize)
	if len(b) < end {
		return 0, fmt.Errorf("%w: truncated TD report body", ErrQuoteFormat)
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
	return 0, fmt.Errorf("%w: v5 body type %d is not a TD report", ErrTeeType, bodyType)
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

// parseSignatureData reads the ECDSA signature data that follows the body:
// quote signature, attestation key, and QE report certification data
// holding the QE report, its signature, the QE authentication data and the
// PCK certificate chain.
func (q *Quote) parseSignatureData(b []byte) error {
	outer := &cursor{b: b}
	sigData := &cursor{b: outer.take(int(outer.u32()))}
	if outer.err != nil {
		return fmt.Errorf("%w: signature data: %v", ErrQuoteFormat, outer.err)
	}
	q.Signature = sigData.take(ecdsaSize)
	q.AttestationKey = sigData.take(ecdsaSize)
	certType := sigData.u16()
	certData := &cursor{b: sigData.take(int(sigData.u32()))}
	if err := exactlyConsumed(sigData); err != nil {
		return fmt.Errorf("%w: signature data: %v", ErrQuoteFormat, err)
	}
	if certType != certQEReport {
		return fmt.Errorf("%w: certification data type %d, want QE report (%d)", ErrCertificationData, certType, certQEReport)
	}
	q.RawQEReport = certData.take(qeReportSize)
	q.QEReportSignature = certData.take(ecdsaSize)
	q.QEAuthData = certData.take(int(certData.u16()))
	innerType := certData.u16()
	q.PCKChain = certData.take(int(certData.u32()))
	if err := exactlyConsumed(certData); err != nil {
		return fmt.Errorf("%w: QE certification data: %v", ErrQuoteFormat, err)
	}
	if innerType != certPCKChain {
		return fmt.Errorf("%w: QE certification data type %d, want PCK chain (%d)", ErrCertificationData, innerType, certPCKChain)
	}
	parseEnclaveReport(&q.QEReport, q.RawQEReport)
	return nil
}

func parseEnclaveReport(r *EnclaveReport, b []byte) {
	copy(r.CPUSVN[:], b[0:16])
	r.MiscSelect = binary.LittleEndian.Uint32(b[16:])
	copy(r.Attributes[:], b[48:64])
	copy(r.MrEnclave[:], b[64:96])
	copy(r.MrSigner[:], b[128:160])
	r.ISVProdID = binary.LittleEndian.Uint16(b[256:])
	r.ISVSVN = binary.LittleEndian.Uint16(b[258:])
	copy(r.ReportData[:], b[320:384])
}
