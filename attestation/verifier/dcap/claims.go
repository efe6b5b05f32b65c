package dcap

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

// PlatformInstanceID renders the PCK certificate's platform instance ID as
// Trustee does, reading it as a little-endian 128-bit number; "" when the
// certificate has none (processor CA).
func PlatformInstanceID(p *PlatformInfo) string {
	if p.InstanceID == nil {
		return ""
	}
	id := slices.Clone(p.InstanceID)
	slices.Reverse(id)
	return hex.EncodeToString(id)
}

// HexLE16 and HexLE32 render a number as the hex of its little-endian
// bytes, as Trustee renders quote fields.
func HexLE16(v uint16) string {
	return hex.EncodeToString(binary.LittleEndian.AppendUint16(nil, v))
}

func HexLE32(v uint32) string {
	return hex.EncodeToString(binary.LittleEndian.AppendUint32(nil, v))
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

// AddClaims adds what Intel's library reports as supplemental data, under
// the names Trustee gives them.
func AddClaims(c verifier.Claims, r *Result) {
	chain, coll, tcb := r.Chain, r.Collateral, r.TCB
	w := coll.dates
	for _, cert := range []*x509.Certificate{chain.Leaf, chain.Intermediate, chain.TrustedRoot} {
		w.add(cert.NotBefore, cert.NotAfter)
	}
	p := &chain.Platform
	c["tcb_status"] = tcb.Status
	c["tcb_date"] = rfc3339(tcb.Date)
	c["advisory_ids"] = stringsToAny(tcb.Advisories)
	// Expired collateral is rejected, so what is reported is always current.
	c["collateral_expiration_status"] = "0"
	c["earliest_issue_date"] = rfc3339(w.earliestStart)
	c["latest_issue_date"] = rfc3339(w.latestStart)
	c["earliest_expiration_date"] = rfc3339(w.earliestEnd)
	c["pck_crl_num"] = crlNumber(coll.pckCRL)
	c["root_ca_crl_num"] = crlNumber(coll.rootCRL)
	c["tcb_eval_num"] = min(coll.TCBInfo.TcbEvaluationDataNumber, coll.QEIdentity.TcbEvaluationDataNumber)
	c["platform_provider_id"] = hex.EncodeToString(p.PPID)
	c["root_key_id"] = rootKeyID(chain.TrustedRoot.PublicKey.(*ecdsa.PublicKey))
	c["sgx_type"] = sgxTypeName(p.SGXType)
	if p.SGXType > 0 && p.HasConfig {
		c["is_dynamic_platform"] = p.DynamicPlatform
		c["is_cached_keys"] = p.CachedKeys
		c["is_smt_enabled"] = p.SMTEnabled
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
