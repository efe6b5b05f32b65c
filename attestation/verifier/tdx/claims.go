package tdx

import (
	"crypto/ecdsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// Claim names and encodings follow Trustee's TDX verifier: byte fields are
// lower-case hex, the DCAP results carry the names of Intel's supplemental
// data as Trustee maps them.

// quoteClaims renders the header and body as the "quote" claim.
func quoteClaims(q *Quote) map[string]any {
	h := &q.Header
	header := map[string]any{
		"version":      hexLE16(h.Version),
		"att_key_type": hexLE16(h.AttKeyType),
		"tee_type":     hexLE32(h.TeeType),
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
		out["type"] = hexLE16(q.BodyType)
		out["size"] = hexLE32(q.BodySize)
	}
	return out
}

func hexLE16(v uint16) string {
	return hex.EncodeToString(binary.LittleEndian.AppendUint16(nil, v))
}

func hexLE32(v uint32) string {
	return hex.EncodeToString(binary.LittleEndian.AppendUint32(nil, v))
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
func evidenceClaims(q *Quote, log *EventLog, p *platformInfo) verifier.Claims {
	c := verifier.Claims{
		"quote":         quoteClaims(q),
		"td_attributes": tdAttributes(q.Body.TDAttributes),
		"report_data":   hex.EncodeToString(q.Body.ReportData[:]),
		"init_data":     hex.EncodeToString(q.Body.MrConfigID[:]),
	}
	if log != nil {
		c["uefi_event_logs"] = log.claims()
	}
	if p.instanceID != nil {
		// Trustee reads the ID as a little-endian 128-bit number.
		id := slices.Clone(p.instanceID)
		slices.Reverse(id)
		c["platform_instance_id"] = hex.EncodeToString(id)
	}
	return c
}

func sgxTypeName(t int) string {
	switch t {
	case 0:
		return "Standard"
	case 1:
		return "Scalable"
	case 2:
		return "Scalable with Integrity"
	}
	return fmt.Sprintf("Unknown (%d)", t)
}

// addDCAPClaims adds what Intel's library reports as supplemental data.
func addDCAPClaims(c verifier.Claims, chain *verifiedChain, coll *collateral, tcb *tcbResult) {
	w := coll.dates
	for _, cert := range []*x509.Certificate{chain.leaf, chain.intermediate, chain.trustedRoot} {
		w.add(cert.NotBefore, cert.NotAfter)
	}
	p := &chain.platform
	c["tcb_status"] = tcb.status
	c["tcb_date"] = rfc3339(tcb.date)
	c["advisory_ids"] = stringsToAny(tcb.advisories)
	// Expired collateral is rejected, so what is reported is always current.
	c["collateral_expiration_status"] = "0"
	c["earliest_issue_date"] = rfc3339(w.earliestStart)
	c["latest_issue_date"] = rfc3339(w.latestStart)
	c["earliest_expiration_date"] = rfc3339(w.earliestEnd)
	c["pck_crl_num"] = crlNumber(coll.pckCRL)
	c["root_ca_crl_num"] = crlNumber(coll.rootCRL)
	c["tcb_eval_num"] = min(coll.tcbInfo.TcbEvaluationDataNumber, coll.qeIdentity.TcbEvaluationDataNumber)
	c["platform_provider_id"] = hex.EncodeToString(p.ppid)
	c["root_key_id"] = rootKeyID(chain.trustedRoot.PublicKey.(*ecdsa.PublicKey))
	c["sgx_type"] = sgxTypeName(p.sgxType)
	if p.sgxType > 0 && p.hasConfig {
		c["is_dynamic_platform"] = p.dynamicPlatform
		c["is_cached_keys"] = p.cachedKeys
		c["is_smt_enabled"] = p.smtEnabled
	}
}

func rfc3339(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}

func stringsToAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func crlNumber(crl *x509.RevocationList) uint64 {
	if crl.Number == nil || !crl.Number.IsUint64() {
		return 0
	}
	return crl.Number.Uint64()
}

// rootKeyID is SHA-384 of the root's uncompressed public key point.
func rootKeyID(key *ecdsa.PublicKey) string {
	point, err := key.Bytes()
	if err != nil {
		return ""
	}
	sum := sha512.Sum384(point)
	return hex.EncodeToString(sum[:])
}
