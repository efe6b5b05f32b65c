package csv

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// A report is one 4096-byte page: the TEE info the PSP signs with the PEK,
// then the signer block (the PEK certificate, the chip's serial number and
// an HMAC-SM3 over both keyed with the guest's mnonce, which only the
// guest checks). Version 1 masks
// the TEE info and signer block with a 32-bit anonce the firmware picks;
// version 2 (the extended report, firmware API 1.4) masks nothing and adds
// the build, RTMRs and a larger signed region.
const (
	reportSize = 4096
	teeInfoV1  = 0x150
	teeInfoV2  = 0x490
	signedV1   = 180  // user_pubkey_digest .. policy
	signedV2   = 1024 // user_pubkey_digest .. reserved1
	rtmrSize   = 32
	serialSize = 64
	signerSize = csvCertSize + serialSize + 32 + 32 // PEK, serial, reserved, MAC
)

// extMagic marks an extended-report request; flags bit 0 then selects
// version 2.
var extMagic = []byte("ATTESTATION_EXT\x00")

// Report is a parsed CSV attestation report. Byte fields are unmasked.
type Report struct {
	Version          int
	UserPubkeyDigest []byte
	VMID, VMVersion  []byte
	ReportData       []byte
	MNonce           []byte
	Measure          []byte
	Policy           uint32
	SigUsage         uint32
	SigAlgo          uint32
	ANonce           uint32
	// Version 2 only.
	Build       uint32
	RTMRVersion uint16
	Reserved0   []byte
	RTMR        [5][]byte
	Reserved1   []byte

	raw    []byte // the page as the firmware wrote it
	signed []byte // the region the signature covers
	sig    []byte
	signer []byte
}

// ParseReport reads a report page from its magic, flags and data, as
// Trustee's evidence carries them (csv-rs's AttestationReportWrapper).
func ParseReport(magic []byte, flags uint32, data []byte) (*Report, error) {
	if len(data) != reportSize {
		return nil, fmt.Errorf("%w: report of %d bytes, want %d", ErrReportFormat, len(data), reportSize)
	}
	var version int
	switch {
	case bytes.Equal(magic, make([]byte, 16)):
		version = 1
	case bytes.Equal(magic, extMagic) && flags == 0:
		version = 1
	case bytes.Equal(magic, extMagic) && flags == 1:
		version = 2
	default:
		return nil, fmt.Errorf("%w: magic %q flags %#x", ErrReportFormat, magic, flags)
	}
	r := &Report{Version: version, raw: data}
	if version == 1 {
		r.parseV1()
	} else {
		r.parseV2()
	}
	return r, nil
}

// common fields: the first 176 bytes and the policy are laid out alike.
func (r *Report) common(unmask func([]byte) []byte) {
	d := r.raw
	r.UserPubkeyDigest = unmask(d[0:32])
	r.VMID = unmask(d[32:48])
	r.VMVersion = unmask(d[48:64])
	r.ReportData = unmask(d[64:128])
	r.MNonce = unmask(d[128:144])
	r.Measure = unmask(d[144:176])
}

func (r *Report) parseV1() {
	d := r.raw
	r.ANonce = binary.LittleEndian.Uint32(d[188:])
	r.common(r.unmask)
	r.Policy = binary.LittleEndian.Uint32(d[176:]) ^ r.ANonce
	r.SigUsage = binary.LittleEndian.Uint32(d[180:]) ^ r.ANonce
	r.SigAlgo = binary.LittleEndian.Uint32(d[184:]) ^ r.ANonce
	r.signed, r.sig = d[:signedV1], d[192:192+sigSize]
	r.signer = d[teeInfoV1 : teeInfoV1+signerSize]
}

func (r *Report) parseV2() {
	d := r.raw
	r.common(bytes.Clone)
	r.Policy = binary.LittleEndian.Uint32(d[176:])
	r.SigUsage = binary.LittleEndian.Uint32(d[180:])
	r.SigAlgo = binary.LittleEndian.Uint32(d[184:])
	r.Build = binary.LittleEndian.Uint32(d[188:])
	r.RTMRVersion = binary.LittleEndian.Uint16(d[192:])
	r.Reserved0 = bytes.Clone(d[194:208])
	for i := range r.RTMR {
		r.RTMR[i] = bytes.Clone(d[208+i*rtmrSize : 208+(i+1)*rtmrSize])
	}
	r.Reserved1 = bytes.Clone(d[368:1024])
	r.signed, r.sig = d[:signedV2], d[signedV2:signedV2+sigSize]
	r.signer = d[teeInfoV2 : teeInfoV2+signerSize]
}

// unmask XORs a copy of b with the anonce repeated (version 1).
func (r *Report) unmask(b []byte) []byte {
	var k [4]byte
	binary.LittleEndian.PutUint32(k[:], r.ANonce)
	out := make([]byte, len(b))
	for i := range b {
		out[i] = b[i] ^ k[i%4]
	}
	return out
}

// checkSigner checks that the PEK and serial number the evidence names
// are the ones in the report's signer block. The attester restores that
// block (unmasks it and clears its reserved field, which voids its MAC)
// and copies the PEK and serial number from it, so they must be equal.
func (r *Report) checkSigner(pek, serial []byte) error {
	if !bytes.Equal(r.signer[:csvCertSize], pek) {
		return fmt.Errorf("%w: PEK", ErrSignerMismatch)
	}
	if !bytes.Equal(r.signer[csvCertSize:csvCertSize+serialSize], serial) {
		return fmt.Errorf("%w: serial number", ErrSignerMismatch)
	}
	return nil
}
