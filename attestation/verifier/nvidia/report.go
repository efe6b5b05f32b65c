package nvidia

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// The report is the SPDM 1.1 GET_MEASUREMENTS request the driver sent
// followed by the GPU's signed MEASUREMENTS response (DMTF DSP0274).
const (
	spdmVersion     = 0x11
	getMeasurements = 0xe0
	measurements    = 0x60
	requestSize     = 37
	NonceSize       = 32
	signatureLen    = 96 // ECDSA P-384 r || s
	// dmtfSpec is the only measurement specification NVIDIA uses.
	dmtfSpec = 1
	// maxReportSize bounds a report: Hopper's are about 4 KiB.
	maxReportSize = 64 << 10
)

// Report is a parsed measurement report, nothing verified.
type Report struct {
	// Nonce is the requester's nonce (the expected report data).
	Nonce []byte
	// ResponseNonce is the GPU's own nonce.
	ResponseNonce []byte
	// Measurements are the DMTF measurement values by block index.
	Measurements map[uint8][]byte
	// Opaque is NVIDIA's opaque data, decoded (see opaque.go).
	Opaque map[string]any
	// FWID is the firmware id from the opaque data (hex).
	FWID string
	// Signed is what the signature covers: request and response up to it.
	Signed    []byte
	Signature []byte
}

// ParseReport decodes a measurement report; the whole input must be used.
func ParseReport(b []byte) (*Report, error) {
	if len(b) > maxReportSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrReport, len(b))
	}
	if len(b) < requestSize || b[0] != spdmVersion || b[1] != getMeasurements {
		return nil, fmt.Errorf("%w: not an SPDM 1.1 GET_MEASUREMENTS request", ErrReport)
	}
	r := &Report{Nonce: b[4:36]}
	s := cryptobyte.String(b[requestSize:])
	var hdr [4]byte
	var blocks uint8
	var record, opaque cryptobyte.String
	if !s.CopyBytes(hdr[:]) || hdr[0] != spdmVersion || hdr[1] != measurements || !s.ReadUint8(&blocks) ||
		!readUint24LE(&s, &record) || !s.ReadBytes(&r.ResponseNonce, NonceSize) ||
		!readUint16LEBytes(&s, &opaque) {
		return nil, fmt.Errorf("%w: truncated SPDM MEASUREMENTS response", ErrReport)
	}
	r.Signed = b[:len(b)-len(s)]
	if !s.ReadBytes(&r.Signature, signatureLen) || !s.Empty() {
		return nil, fmt.Errorf("%w: signature missing or trailing bytes", ErrReport)
	}
	var err error
	if r.Measurements, err = parseRecord(record, int(blocks)); err != nil {
		return nil, err
	}
	if r.Opaque, err = parseOpaque(opaque); err != nil {
		return nil, err
	}
	fwid, _ := r.Opaque["fwid"].(string)
	if fwid == "" {
		return nil, fmt.Errorf("%w: no fwid", ErrOpaqueData)
	}
	r.FWID = fwid
	return r, nil
}

// parseRecord reads the measurement blocks: index, specification, size,
// then a DMTF measurement (type, size, value).
func parseRecord(s cryptobyte.String, blocks int) (map[uint8][]byte, error) {
	m := make(map[uint8][]byte, blocks)
	for range blocks {
		var index, spec, typ uint8
		var block, value cryptobyte.String
		if !s.ReadUint8(&index) || !s.ReadUint8(&spec) || !readUint16LEBytes(&s, &block) {
			return nil, fmt.Errorf("%w: truncated measurement block", ErrReport)
		}
		if spec != dmtfSpec {
			return nil, fmt.Errorf("%w: measurement %d is not in the DMTF format", ErrReport, index)
		}
		if !block.ReadUint8(&typ) || !readUint16LEBytes(&block, &value) || !block.Empty() {
			return nil, fmt.Errorf("%w: malformed DMTF measurement %d", ErrReport, index)
		}
		if _, dup := m[index]; dup {
			return nil, fmt.Errorf("%w: measurement %d twice", ErrReport, index)
		}
		m[index] = value
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: measurement record longer than its blocks", ErrReport)
	}
	return m, nil
}

// SPDM's integers are little-endian, cryptobyte's big-endian.

func readUint16LEBytes(s *cryptobyte.String, out *cryptobyte.String) bool {
	var b []byte
	if !s.ReadBytes(&b, 2) {
		return false
	}
	return s.ReadBytes((*[]byte)(out), int(binary.LittleEndian.Uint16(b)))
}

func readUint24LE(s *cryptobyte.String, out *cryptobyte.String) bool {
	var b []byte
	if !s.ReadBytes(&b, 3) {
		return false
	}
	return s.ReadBytes((*[]byte)(out), int(b[0])|int(b[1])<<8|int(b[2])<<16)
}
