package protocol

import (
	"crypto/sha512"
	"encoding/json"

	"github.com/gowebpki/jcs"
)

// Members are the key's members as Trustee re-serializes it before
// hashing: only those of its key type.
func (k TeePubKey) Members() map[string]any {
	if k.Kty == "RSA" {
		return map[string]any{"kty": k.Kty, "alg": k.Alg, "n": k.N, "e": k.E}
	}
	return map[string]any{"kty": k.Kty, "alg": k.Alg, "crv": k.Crv, "x": k.X, "y": k.Y}
}

// RuntimeDataClaims is the runtime data the evidence is bound to. The
// primary evidence's includes the additional evidence (pass a pointer,
// even to ""); an additional device's does not (pass nil).
func RuntimeDataClaims(nonce string, pub TeePubKey, additional *string) map[string]any {
	m := map[string]any{"nonce": nonce, "tee-pubkey": pub.Members()}
	if additional != nil {
		m["additional-evidence"] = *additional
	}
	return m
}

// CanonicalJSON is the RFC 8785 (JCS) form of v.
func CanonicalJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jcs.Transform(b)
}

// ReportData is the SHA-384 of the canonical runtime data: what a guest
// puts (fitted to the field) into its TEE evidence.
func ReportData(runtimeData map[string]any) ([]byte, error) {
	b, err := CanonicalJSON(runtimeData)
	if err != nil {
		return nil, err
	}
	sum := sha512.Sum384(b)
	return sum[:], nil
}
