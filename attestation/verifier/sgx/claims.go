package sgx

import (
	"encoding/hex"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
)

// field is a quote field as Trustee names it, by its size in bytes.
type field struct {
	name string
	size int
}

// The header and enclave report fields in their order in the quote.
var (
	headerFields = []field{{"version", 2}, {"att_key_type", 2}, {"att_key_data_0", 4}, {"qe_svn", 2},
		{"pce_svn", 2}, {"vendor_id", 16}, {"user_data", 20}}
	bodyFields = []field{{"cpu_svn", 16}, {"misc_select", 4}, {"reserved1", 12}, {"isv_ext_prod_id", 16},
		{"attributes.flags", 8}, {"attributes.xfrm", 8}, {"mr_enclave", 32}, {"reserved2", 32},
		{"mr_signer", 32}, {"reserved3", 32}, {"config_id", 64}, {"isv_prod_id", 2}, {"isv_svn", 2},
		{"config_svn", 2}, {"reserved4", 42}, {"isv_family_id", 16}, {"report_data", 64}}
)

// hexFields renders consecutive fields of b as lower-case hex of their
// bytes, as Trustee does.
func hexFields(b []byte, fields []field) map[string]any {
	out := make(map[string]any, len(fields))
	for _, f := range fields {
		out[f.name] = hex.EncodeToString(b[:f.size])
		b = b[f.size:]
	}
	return out
}

// quoteClaims are the claims Trustee derives from the quote and the PCK
// certificate.
func quoteClaims(q *Quote, p *dcap.PlatformInfo) verifier.Claims {
	body := hexFields(q.SignedData[len(q.SignedData)-dcap.EnclaveReportSize:], bodyFields)
	c := verifier.Claims{
		"header":      hexFields(q.SignedData, headerFields),
		"body":        body,
		"report_data": body["report_data"],
		"init_data":   body["config_id"],
	}
	if id := dcap.PlatformInstanceID(p); id != "" {
		c["platform_instance_id"] = id
	}
	return c
}
