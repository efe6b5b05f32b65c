package dcap

import (
	"encoding/binary"
	"fmt"
)

// Sizes and constants shared by SGX quotes (v3, v4) and TDX quotes (v4,
// v5), per Intel's DCAP Quoting Library API.
const (
	HeaderSize        = 48
	EnclaveReportSize = 384

	attKeyECDSAP256 = 2
	CertQEReport    = 6
	CertPCKChain    = 5
)

// Quote header tee_type values.
const (
	TeeTypeSGX = 0x00
	TeeTypeTDX = 0x81
)

// intelQEVendorID identifies quotes made by Intel's quoting enclave.
var intelQEVendorID = [16]byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}

// Header is the 48-byte quote header of every version. In a v3 quote the
// tee_type word is reserved (zero); Reserved holds the QE and PCE SVNs.
type Header struct {
	Version    uint16
	AttKeyType uint16
	TeeType    uint32
	Reserved   [4]byte
	VendorID   [16]byte
	UserData   [20]byte
}

// ParseHeader reads a quote header and checks what every DCAP quote must
// say: an ECDSA P-256 attestation key of Intel's quoting enclave. The
// caller checks the version and TEE type it accepts.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, fmt.Errorf("%w: %d bytes is shorter than a quote header", ErrQuoteFormat, len(b))
	}
	h.Version = binary.LittleEndian.Uint16(b[0:])
	h.AttKeyType = binary.LittleEndian.Uint16(b[2:])
	h.TeeType = binary.LittleEndian.Uint32(b[4:])
	copy(h.Reserved[:], b[8:12])
	copy(h.VendorID[:], b[12:28])
	copy(h.UserData[:], b[28:48])
	switch {
	case h.AttKeyType != attKeyECDSAP256:
		return h, fmt.Errorf("%w: attestation key type %d", ErrAttestationKey, h.AttKeyType)
	case h.VendorID != intelQEVendorID:
		return h, fmt.Errorf("%w: vendor id %x", ErrQEVendor, h.VendorID)
	}
	return h, nil
}

// Expect checks the quote is of a version in [minVersion, maxVersion] and,
// from version 4 on (v3 has no tee_type), of teeType.
func (h *Header) Expect(minVersion, maxVersion uint16, teeType uint32) error {
	if h.Version < minVersion || h.Version > maxVersion {
		return fmt.Errorf("%w: %d", ErrQuoteVersion, h.Version)
	}
	if h.Version >= 4 && h.TeeType != teeType {
		return fmt.Errorf("%w: tee_type %#x, want %#x", ErrTeeType, h.TeeType, teeType)
	}
	return nil
}

// EnclaveReport is an SGX enclave report: the body of an SGX quote and the
// quoting enclave's report in every quote.
type EnclaveReport struct {
	CPUSVN       [16]byte
	MiscSelect   uint32
	Reserved1    [12]byte
	ISVExtProdID [16]byte
	Attributes   [16]byte // flags (8 bytes) then XFRM (8 bytes)
	MrEnclave    [32]byte
	Reserved2    [32]byte
	MrSigner     [32]byte
	Reserved3    [32]byte
	ConfigID     [64]byte
	ISVProdID    uint16
	ISVSVN       uint16
	ConfigSVN    uint16
	Reserved4    [42]byte
	ISVFamilyID  [16]byte
	ReportData   [64]byte
}

// ParseEnclaveReport reads a report of EnclaveReportSize bytes; the caller
// has checked the length.
func ParseEnclaveReport(r *EnclaveReport, b []byte) {
	c := &Cursor{B: b}
	copy(r.CPUSVN[:], c.Take(16))
	r.MiscSelect = c.U32()
	copy(r.Reserved1[:], c.Take(12))
	copy(r.ISVExtProdID[:], c.Take(16))
	copy(r.Attributes[:], c.Take(16))
	copy(r.MrEnclave[:], c.Take(32))
	copy(r.Reserved2[:], c.Take(32))
	copy(r.MrSigner[:], c.Take(32))
	copy(r.Reserved3[:], c.Take(32))
	copy(r.ConfigID[:], c.Take(64))
	r.ISVProdID = c.U16()
	r.ISVSVN = c.U16()
	r.ConfigSVN = c.U16()
	copy(r.Reserved4[:], c.Take(42))
	copy(r.ISVFamilyID[:], c.Take(16))
	copy(r.ReportData[:], c.Take(64))
}

// SignatureData is the ECDSA signature data after a quote's body: the
// attestation key's signature over header and body, the key, and the QE
// report that binds the key, signed by the PCK key whose chain follows.
// Byte slices alias the parsed input.
type SignatureData struct {
	Signature      []byte // raw r||s
	AttestationKey []byte // raw x||y on P-256

	QEReport          EnclaveReport
	RawQEReport       []byte // signed by the PCK key
	QEReportSignature []byte
	QEAuthData        []byte
	PCKChain          []byte // PEM: PCK leaf, platform/processor CA, root CA
}

// ParseSignatureData reads the length-prefixed signature data of a quote of
// the given version. Version 3 carries the QE report directly; versions 4
// and 5 wrap it in certification data of type 6.
func ParseSignatureData(b []byte, version uint16) (*SignatureData, error) {
	outer := &Cursor{B: b}
	sig := &Cursor{B: outer.Take(int(outer.U32()))}
	if outer.Err != nil {
		return nil, fmt.Errorf("%w: signature data: %v", ErrQuoteFormat, outer.Err)
	}
	s := &SignatureData{Signature: sig.Take(ECDSASize), AttestationKey: sig.Take(ECDSASize)}
	qe := sig
	if version >= 4 {
		certType := sig.U16()
		qe = &Cursor{B: sig.Take(int(sig.U32()))}
		if err := ExactlyConsumed(sig); err != nil {
			return nil, fmt.Errorf("%w: signature data: %v", ErrQuoteFormat, err)
		}
		if certType != CertQEReport {
			return nil, fmt.Errorf("%w: certification data type %d, want QE report (%d)", ErrCertificationData, certType, CertQEReport)
		}
	}
	s.RawQEReport = qe.Take(EnclaveReportSize)
	s.QEReportSignature = qe.Take(ECDSASize)
	s.QEAuthData = qe.Take(int(qe.U16()))
	innerType := qe.U16()
	s.PCKChain = qe.Take(int(qe.U32()))
	if err := ExactlyConsumed(qe); err != nil {
		return nil, fmt.Errorf("%w: QE certification data: %v", ErrQuoteFormat, err)
	}
	if innerType != CertPCKChain {
		return nil, fmt.Errorf("%w: QE certification data type %d, want PCK chain (%d)", ErrCertificationData, innerType, CertPCKChain)
	}
	ParseEnclaveReport(&s.QEReport, s.RawQEReport)
	return s, nil
}

// Quote is what every DCAP quote has around its TEE's body: the header, the
// signed bytes (header and body) and the signature data.
type Quote struct {
	Header     Header
	SignedData []byte
	SignatureData
}

// Parse reads a quote's header, lets body check the header and parse the
// TEE's body that starts at HeaderSize, returning where it ends, then reads
// the signature data. Bytes after the signature data are ignored: guests
// often hand over a fixed-size buffer.
func (q *Quote) Parse(b []byte, body func(h *Header, b []byte) (end int, err error)) error {
	h, err := ParseHeader(b)
	if err != nil {
		return err
	}
	end, err := body(&h, b)
	if err != nil {
		return err
	}
	sig, err := ParseSignatureData(b[end:], h.Version)
	if err != nil {
		return err
	}
	*q = Quote{Header: h, SignedData: b[:end], SignatureData: *sig}
	return nil
}
