// Package protocol holds the wire types of the KBS protocol (Trustee, version
// 0.4.0) shared by the broker, its clients and the guest side.
package protocol

import "encoding/json"

// Version is the only KBS protocol version this implementation speaks.
const Version = "0.4.0"

// SessionCookie is the name of the cookie that carries the RCAR session id.
const SessionCookie = "kbs-session-id"

// Request is the body of POST /kbs/v0/auth.
type Request struct {
	Version     string          `json:"version"`
	Tee         Tee             `json:"tee"`
	ExtraParams json.RawMessage `json:"extra-params,omitempty"`
}

// Challenge answers a Request.
type Challenge struct {
	Nonce       string          `json:"nonce"`
	ExtraParams json.RawMessage `json:"extra-params"`
}

// InitData is the optional plaintext initdata sent with the evidence.
type InitData struct {
	Format string `json:"format"`
	Body   string `json:"body"`
}

// RuntimeData is bound to the evidence through its canonical-JSON digest.
type RuntimeData struct {
	Nonce     string    `json:"nonce"`
	TeePubKey TeePubKey `json:"tee-pubkey"`
}

// CompositeEvidence is the 0.4.0 tee-evidence object.
type CompositeEvidence struct {
	Primary json.RawMessage `json:"primary_evidence"`
	// Additional is a JSON string mapping TEE names to evidence, or "".
	Additional string `json:"additional_evidence"`
}

// Attestation is the body of POST /kbs/v0/attest.
type Attestation struct {
	InitData    *InitData         `json:"init-data,omitempty"`
	RuntimeData RuntimeData       `json:"runtime-data"`
	TeeEvidence CompositeEvidence `json:"tee-evidence"`
}

// AttestationToken answers a successful Attestation.
type AttestationToken struct {
	Token string `json:"token"`
}

// TeePubKey is the guest's ephemeral public key as a JWK. Only the members
// the protocol uses are kept, so canonical JSON of it is stable.
type TeePubKey struct {
	Kty string `json:"kty"`
	Alg string `json:"alg"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// Response is a resource payload as a flattened JWE JSON object.
type Response struct {
	Protected    string `json:"protected"`
	EncryptedKey string `json:"encrypted_key"`
	AAD          string `json:"aad,omitempty"`
	IV           string `json:"iv"`
	Ciphertext   string `json:"ciphertext"`
	Tag          string `json:"tag"`
}

// AdminRole is the role claim of Cocoon's own admin tokens.
const AdminRole = "admin"
