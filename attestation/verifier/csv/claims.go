package csv

import (
	"encoding/binary"
	"encoding/hex"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Claims returns what Trustee's CSV verifier reports for a verified
// report, with its names and encodings: byte fields as lower-case hex of
// the unmasked values, 32-bit words as hex of their little-endian bytes,
// the guest policy's bit fields as numbers.
func Claims(ev *Evidence) verifier.Claims {
	r := ev.Report
	c := verifier.Claims{
		"policy":             policyClaims(r.Policy),
		"user_pubkey_digest": hex.EncodeToString(r.UserPubkeyDigest),
		"vm_id":              hex.EncodeToString(r.VMID),
		"vm_version":         hex.EncodeToString(r.VMVersion),
		"report_data":        hex.EncodeToString(r.ReportData),
		"mnonce":             hex.EncodeToString(r.MNonce),
		"measure":            hex.EncodeToString(r.Measure),
		"sig_usage":          hexLE32(r.SigUsage),
		"sig_algo":           hexLE32(r.SigAlgo),
		"serial_number":      ev.ChipID(),
	}
	if r.Version == 1 {
		c["version"] = "1"
		c["anonce"] = hexLE32(r.ANonce)
		return c
	}
	c["version"] = "2"
	c["build"] = int(r.Build)
	c["rtmr_version"] = int(r.RTMRVersion)
	c["reserved0"] = hex.EncodeToString(r.Reserved0)
	for i, m := range r.RTMR {
		c["rtmr"+string(rune('0'+i))] = hex.EncodeToString(m)
	}
	c["reserved1"] = hex.EncodeToString(r.Reserved1)
	return c
}

// policyClaims splits the guest policy into Hygon's fields.
func policyClaims(p uint32) map[string]any {
	bit := func(n uint) int { return int(p >> n & 1) }
	return map[string]any{
		"nodbg":       bit(0),
		"noks":        bit(1),
		"es":          bit(2),
		"nosend":      bit(3),
		"domain":      bit(4),
		"csv":         bit(5),
		"csv3":        bit(6),
		"asid_reuse":  bit(7),
		"hsk_version": int(p >> 8 & 0xf),
		"cek_version": int(p >> 12 & 0xf),
		"api_major":   int(p >> 16 & 0xff),
		"api_minor":   int(p >> 24),
	}
}

func hexLE32(v uint32) string {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return hex.EncodeToString(b[:])
}
