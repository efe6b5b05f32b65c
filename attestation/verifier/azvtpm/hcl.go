// Package azvtpm verifies what Azure confidential VMs' evidence shares
// between SEV-SNP (az-snp-vtpm) and TDX (az-tdx-vtpm), as Trustee's Azure
// verifiers do: the HCL report the paravisor stores in the vTPM (its
// hardware report binds the SHA-256 of the report's runtime data, which
// carries the vTPM attestation key and the guest's user data), the vTPM
// quote signed by that key over the nonce and the PCRs, and Trustee's
// evidence JSON in its versions 0, 1 and 2. The hardware report itself is
// the snp and tdx verifiers' to check.
package azvtpm

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
)

// HCL report layout (Azure's IGVM attestation report): a 32-byte header,
// the hardware report in a field as large as the largest one (an SNP
// report), then the runtime data's header and its variable data.
const (
	hclHeaderSize    = 32
	hwReportSize     = SNPReportSize
	runtimeHeaderLen = 20
	varDataOffset    = hclHeaderSize + hwReportSize + runtimeHeaderLen

	// SNPReportSize and TDReportSize are the hardware reports' sizes.
	SNPReportSize = 1184
	TDReportSize  = 1024

	hashSHA256 = 1
	akKeyID    = "HCLAkPub"
)

// hclMagic opens every HCL report: "HCLA".
var hclMagic = []byte("HCLA")

// ReportType is the kind of hardware report an HCL report carries.
type ReportType uint32

const (
	ReportSNP ReportType = 2
	ReportTDX ReportType = 4
)

// HCLReport is a parsed HCL report. Byte slices alias the input.
type HCLReport struct {
	Type ReportType
	// HWReport is the SNP report or the TD report.
	HWReport []byte
	// VarData is the runtime data: JSON with the vTPM keys, the VM's
	// configuration and the guest's user data.
	VarData []byte
}

// ParseHCLReport parses an HCL report as the vTPM's NV index holds it.
func ParseHCLReport(b []byte) (*HCLReport, error) {
	if len(b) < varDataOffset {
		return nil, fmt.Errorf("%w: %d bytes", ErrHCLFormat, len(b))
	}
	if !bytes.Equal(b[:4], hclMagic) {
		return nil, fmt.Errorf("%w: signature %x is not HCLA", ErrHCLFormat, b[:4])
	}
	rt := b[hclHeaderSize+hwReportSize:]
	r := &HCLReport{Type: ReportType(binary.LittleEndian.Uint32(rt[8:]))}
	hashType, size := binary.LittleEndian.Uint32(rt[12:]), binary.LittleEndian.Uint32(rt[16:])
	hw := b[hclHeaderSize:]
	switch r.Type {
	case ReportSNP:
		r.HWReport = hw[:SNPReportSize]
	case ReportTDX:
		r.HWReport = hw[:TDReportSize]
	default:
		return nil, fmt.Errorf("%w: report type %d", ErrHCLFormat, r.Type)
	}
	if hashType != hashSHA256 {
		return nil, fmt.Errorf("%w: runtime data hash type %d is not SHA-256", ErrHCLFormat, hashType)
	}
	if uint64(size) > uint64(len(b)-varDataOffset) {
		return nil, fmt.Errorf("%w: runtime data of %d bytes, %d left", ErrHCLFormat, size, len(b)-varDataOffset)
	}
	r.VarData = b[varDataOffset : varDataOffset+int(size)]
	return r, nil
}

// VarDataDigest is what the hardware report's report data starts with.
func (r *HCLReport) VarDataDigest() [32]byte {
	return sha256.Sum256(r.VarData)
}

// varData is what the runtime data says that matters here.
type varData struct {
	Keys []struct {
		KeyID string `json:"kid"`
		Kty   string `json:"kty"`
		N     string `json:"n"`
		E     string `json:"e"`
	} `json:"keys"`
	UserData string `json:"user-data"`
}

func (r *HCLReport) varData() (*varData, error) {
	var v varData
	if err := json.Unmarshal(r.VarData, &v); err != nil {
		return nil, fmt.Errorf("%w: runtime data: %v", ErrHCLFormat, err)
	}
	return &v, nil
}

// AKPub is the vTPM attestation key the runtime data names.
func (r *HCLReport) AKPub() (*rsa.PublicKey, error) {
	v, err := r.varData()
	if err != nil {
		return nil, err
	}
	for _, k := range v.Keys {
		if k.KeyID != akKeyID {
			continue
		}
		n, errN := base64.RawURLEncoding.DecodeString(k.N)
		e, errE := base64.RawURLEncoding.DecodeString(k.E)
		if k.Kty != "RSA" || errN != nil || errE != nil || len(e) == 0 || len(e) > 4 || len(n) < 256 {
			return nil, fmt.Errorf("%w: %s is not an RSA key of 2048 bits or more", ErrAKPub, akKeyID)
		}
		exp := new(big.Int).SetBytes(e)
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp.Int64())}, nil
	}
	return nil, fmt.Errorf("%w: no %s key in the runtime data", ErrAKPub, akKeyID)
}

// UserData is the guest's report data the paravisor put in the runtime
// data (evidence version 2 binds the nonce there too).
func (r *HCLReport) UserData() ([]byte, error) {
	v, err := r.varData()
	if err != nil {
		return nil, err
	}
	b, err := hex.DecodeString(v.UserData)
	if err != nil {
		return nil, fmt.Errorf("%w: user-data: %v", ErrHCLFormat, err)
	}
	return b, nil
}

// CheckBinding checks the hardware report's report data starts with the
// SHA-256 of the runtime data.
func (r *HCLReport) CheckBinding(reportData []byte) error {
	d := r.VarDataDigest()
	if len(reportData) < len(d) || !bytes.Equal(reportData[:len(d)], d[:]) {
		return fmt.Errorf("%w: report data %x, runtime data digest %x", ErrHCLBinding, reportData, d)
	}
	return nil
}
