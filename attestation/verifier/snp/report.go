package snp

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
)

// Report offsets the verifier reads beyond go-sev-guest's proto.
const (
	offCPUIDFamily = 0x188
	offCPUIDModel  = 0x189
)

// Report is a parsed SEV-SNP ATTESTATION_REPORT (SNP firmware ABI,
// versions 2 to 5). Parsing checks the format only; nothing is trusted
// until a Verifier checked the signature.
type Report struct {
	raw    []byte
	proto  *spb.Report
	signer abi.ReportSigner
}

// ParseReport parses the 1184-byte report the firmware returns.
func ParseReport(raw []byte) (*Report, error) {
	if len(raw) != abi.ReportSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrReportSize, len(raw), abi.ReportSize)
	}
	// go-sev-guest leaves the version to its validation step; check it
	// first so the CPUID and mitigation fields are read only where defined.
	if v := binary.LittleEndian.Uint32(raw); v < abi.MinSupportedReportVersion || v > abi.MaxSupportedReportVersion {
		return nil, fmt.Errorf("%w: %d, want %d to %d", ErrReportVersion, v,
			abi.MinSupportedReportVersion, abi.MaxSupportedReportVersion)
	}
	p, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReportFormat, err)
	}
	info, err := abi.ParseSignerInfo(p.SignerInfo)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReportFormat, err)
	}
	return &Report{raw: append([]byte(nil), raw...), proto: p, signer: info.SigningKey}, nil
}

// Bytes returns the report in its ABI form; callers must not modify it.
func (r *Report) Bytes() []byte { return r.raw }

// Proto returns go-sev-guest's view of the report.
func (r *Report) Proto() *spb.Report { return r.proto }

// Signer is the key the firmware signed with (VCEK, VLEK or none).
func (r *Report) Signer() abi.ReportSigner { return r.signer }

// Product is the product the report's CPUID names; version 2 reports carry
// no CPUID and give ProductUnknown.
func (r *Report) Product() Product {
	if r.proto.Version < abi.ReportVersion3 {
		return ProductUnknown
	}
	return productFromCPUID(r.raw[offCPUIDFamily], r.raw[offCPUIDModel])
}

// turin tells which TCB_VERSION layout the report uses. Version 2 reports
// predate Turin and always use the older layout.
func (r *Report) turin() bool { return r.Product() == Turin }

// ReportedTCB is the TCB the signing key was derived for.
func (r *Report) ReportedTCB() TCB { return decodeTCB(r.proto.ReportedTcb, r.turin()) }

// kdsHWID is the hardware ID as the KDS and Trustee's store spell it: Turin
// uses the first 8 bytes of CHIP_ID only.
func (r *Report) kdsHWID() []byte {
	if r.turin() {
		return r.proto.ChipId[:8]
	}
	return r.proto.ChipId
}
