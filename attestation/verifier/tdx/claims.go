package tdx

import (
	"encoding/binary"
	"encoding/hex"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// Claim names and encodings follow Trustee's TDX verifier: byte fields are
// lower-case hex, the DCAP results carry the names of Intel's supplemental
// data as Trustee maps them.

// quoteClaims renders the header and body as the "quote" claim.
func quoteClaims(q *Quote) map[string]any {
	h := &q.Header
	header := map[string]any{
		"version":      dcap.HexLE16(h.Version),
		"att_key_type": dcap.HexLE16(h.AttKeyType),
		"tee_type":     dcap.HexLE32(h.TeeType),
		"reserved":     hex.EncodeToString(h.Reserved[:]),
		"vendor_id":    hex.EncodeToString(h.VendorID[:]),
		"user_data":    hex.EncodeToString(h.UserData[:]),
	}
	b := &q.Body
	body := map[string]any{
		"tcb_svn":         hex.EncodeToString(b.TeeTCBSVN[:]),
		"mr_seam":         hex.EncodeToString(b.MrSeam[:]),
		"mrsigner_seam":   hex.EncodeToString(b.MrSignerSeam[:]),
		"seam_attributes": hex.EncodeToString(b.SeamAttributes[:]),
		"td_attributes":   hex.EncodeToString(b.TDAttributes[:]),
		"xfam":            hex.EncodeToString(b.XFAM[:]),
		"mr_td":           hex.EncodeToString(b.MrTD[:]),
		"mr_config_id":    hex.EncodeToString(b.MrConfigID[:]),
		"mr_owner":        hex.EncodeToString(b.MrOwner[:]),
		"mr_owner_config": hex.EncodeToString(b.MrOwnerConfig[:]),
		"rtmr_0":          hex.EncodeToString(b.RTMR[0][:]),
		"rtmr_1":          hex.EncodeToString(b.RTMR[1][:]),
		"rtmr_2":          hex.EncodeToString(b.RTMR[2][:]),
		"rtmr_3":          hex.EncodeToString(b.RTMR[3][:]),
		"report_data":     hex.EncodeToString(b.ReportData[:]),
	}
	if q.BodyType == bodyTypeTD15 {
		body["tee_tcb_svn2"] = hex.EncodeToString(b.TeeTCBSVN2[:])
		body["mr_servicetd"] = hex.EncodeToString(b.MrServiceTD[:])
	}
	out := map[string]any{"header": header, "body": body}
	if h.Version == 5 {
		out["type"] = dcap.HexLE16(q.BodyType)
		out["size"] = dcap.HexLE32(q.BodySize)
	}
	return out
}

// tdAttributes decodes the TD attribute bits Trustee reports.
func tdAttributes(a [8]byte) map[string]any {
	v := binary.LittleEndian.Uint64(a[:])
	return map[string]any{
		"debug":           v&(1<<0) != 0,
		"septve_disable":  v&(1<<28) != 0,
		"protection_keys": v&(1<<30) != 0,
		"key_locker":      v&(1<<31) != 0,
		"perfmon":         v&(1<<63) != 0,
	}
}

// evidenceClaims are the claims Trustee derives from the quote, the event
// log and the PCK certificate alone.
func evidenceClaims(q *Quote, log *EventLog, p *dcap.PlatformInfo) verifier.Claims {
	c := verifier.Claims{
		"quote":         quoteClaims(q),
		"td_attributes": tdAttributes(q.Body.TDAttributes),
		"report_data":   hex.EncodeToString(q.Body.ReportData[:]),
		"init_data":     hex.EncodeToString(q.Body.MrConfigID[:]),
	}
	if log != nil {
		c["uefi_event_logs"] = log.Claims()
	}
	if id := dcap.PlatformInstanceID(p); id != "" {
		c["platform_instance_id"] = id
	}
	return c
}
