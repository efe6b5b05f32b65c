// Package azvtpmtest builds what Azure's paravisor puts in the vTPM, for
// tests of the Azure attesters on a software TPM.
package azvtpmtest

import (
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"testing"

	vazvtpm "github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
)

// SyntheticHCLReport is an HCL report as Azure's paravisor writes it, for
// tests on a software TPM: a zero hardware report of typ whose report
// data binds runtime data naming ak as HCLAkPub and userData (hex, zero
// padded to 64 bytes) as the user data. It is small enough for swtpm's NV
// indexes (2048 bytes).
func SyntheticHCLReport(t testing.TB, typ vazvtpm.ReportType, ak *rsa.PublicKey, userData []byte) []byte {
	return HCLReport(t, typ, ak, userData, func(reportData []byte) []byte {
		hw := make([]byte, vazvtpm.SNPReportSize)
		// REPORT_DATA: at 0x50 in an SNP report, at 128 in a TD report.
		off := 0x50
		if typ == vazvtpm.ReportTDX {
			off = 128
		}
		copy(hw[off:], reportData)
		return hw
	})
}

// HCLReport is SyntheticHCLReport with the hardware report hardware makes
// for its report data (the runtime data's SHA-256): a signed SNP report,
// for instance, 1184 bytes.
func HCLReport(t testing.TB, typ vazvtpm.ReportType, ak *rsa.PublicKey, userData []byte, hardware func(reportData []byte) []byte) []byte {
	t.Helper()
	user := make([]byte, 64)
	copy(user, userData)
	varData, err := json.Marshal(map[string]any{
		"keys": []map[string]string{{"kid": "HCLAkPub", "kty": "RSA", "key_ops": "sign",
			"n": base64.RawURLEncoding.EncodeToString(ak.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(ak.E)).Bytes())}},
		"user-data": hex.EncodeToString(user),
	})
	if err != nil {
		t.Fatal(err)
	}
	le32 := binary.LittleEndian.AppendUint32
	b := []byte("HCLA")
	b = le32(b, 1)
	b = append(b, make([]byte, 24)...)
	digest := sha256.Sum256(varData)
	hw := hardware(digest[:])
	if len(hw) != vazvtpm.SNPReportSize {
		t.Fatalf("azvtpmtest: hardware report of %d bytes", len(hw))
	}
	b = append(b, hw...)
	b = le32(b, uint32(20+len(varData)))
	b = le32(b, 1)
	b = le32(b, uint32(typ))
	b = le32(b, 1) // SHA-256
	b = le32(b, uint32(len(varData)))
	return append(b, varData...)
}
