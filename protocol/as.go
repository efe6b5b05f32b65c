package protocol

import "encoding/json"

// The standalone attestation service's REST API (Trustee's restful-as).

// ASAttestationRequest is the body of POST /attestation; the answer is the
// EAR token as text.
type ASAttestationRequest struct {
	VerificationRequests []ASVerificationRequest `json:"verification_requests"`
	PolicyIDs            []string                `json:"policy_ids"`
}

// ASVerificationRequest is one piece of evidence to verify.
type ASVerificationRequest struct {
	Tee string `json:"tee"`
	// Evidence is the base64url (no padding) of the evidence JSON.
	Evidence                 string         `json:"evidence"`
	RuntimeData              *ASRuntimeData `json:"runtime_data,omitempty"`
	InitData                 *ASInitData    `json:"init_data,omitempty"`
	RuntimeDataHashAlgorithm string         `json:"runtime_data_hash_algorithm,omitempty"`
}

// ASRuntimeData is either raw bytes (base64url, used as report data as
// is) or a JSON document hashed in canonical form.
type ASRuntimeData struct {
	Raw        *string         `json:"raw,omitempty"`
	Structured json.RawMessage `json:"structured,omitempty"`
}

// ASInitData is either the initdata digest (base64url) or the TOML text.
type ASInitData struct {
	Digest *string `json:"init_data_digest,omitempty"`
	TOML   *string `json:"init_data_toml,omitempty"`
}

// ASSetPolicyRequest is the body of POST /policy.
type ASSetPolicyRequest struct {
	PolicyID string `json:"policy_id"`
	// Policy is the base64url (no padding) Rego text.
	Policy string `json:"policy"`
}
