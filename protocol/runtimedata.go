package protocol

import (
	"crypto/sha512"
	"encoding/json"
	"slices"
	"unicode/utf8"

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
	if b, ok := AppendCanonical(make([]byte, 0, 512), v); ok {
		return b, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jcs.Transform(b)
}

// ReportData is the SHA-384 of the canonical runtime data: what a guest
// puts (fitted to the field) into its TEE evidence.
func ReportData(runtimeData map[string]any) ([]byte, error) {
	return ReportDataOf(TeeSample, runtimeData)
}

// ReportDataOf is the digest of the canonical runtime data a guest of tee
// puts into its evidence (see Tee.RuntimeDataHash).
func ReportDataOf(tee Tee, runtimeData map[string]any) ([]byte, error) {
	b, err := CanonicalJSON(runtimeData)
	if err != nil {
		return nil, err
	}
	if tee.RuntimeDataHash() == "sha512" {
		sum := sha512.Sum512(b)
		return sum[:], nil
	}
	sum := sha512.Sum384(b)
	return sum[:], nil
}

// AppendCanonical writes the shape runtime data has, objects of strings and
// objects with ASCII keys, in RFC 8785 form directly: every handshake
// hashes one on each side (and the attestation service encodes its claims
// this way when they have that shape). ok is false for any other value (numbers,
// arrays, other keys, invalid UTF-8), which goes through encoding/json and
// jcs instead.
func AppendCanonical(b []byte, v any) (_ []byte, ok bool) {
	switch v := v.(type) {
	case string:
		return appendCanonicalString(b, v)
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			for i := range len(k) {
				if k[i] >= utf8.RuneSelf {
					return nil, false // sorted by UTF-16 code units, not bytes
				}
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b, _ = appendCanonicalString(b, k)
			if b, ok = AppendCanonical(append(b, ':'), v[k]); !ok {
				return nil, false
			}
		}
		return append(b, '}'), true
	}
	return nil, false
}

// appendCanonicalString escapes as ECMAScript's JSON.stringify does: the
// quote, the backslash and control characters only.
func appendCanonicalString(b []byte, s string) ([]byte, bool) {
	if !utf8.ValidString(s) {
		return nil, false
	}
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := range len(s) {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c >= 0x20:
			b = append(b, c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
	}
	return append(b, '"'), true
}
