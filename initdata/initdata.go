// Package initdata parses the initdata document a pod is started with and
// computes the digest the TEE binds (SNP HOST_DATA, TDX MRCONFIGID, TPM PCR 8).
package initdata

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/BurntSushi/toml"
)

// Version is the initdata format version understood.
const Version = "0.1.0"

// MaxSize bounds an initdata document.
const MaxSize = 256 << 10

// ErrInvalid is returned for an initdata document that cannot be used.
var ErrInvalid = errors.New("invalid initdata")

// Document is a parsed initdata TOML.
type Document struct {
	Version   string            `toml:"version"`
	Algorithm string            `toml:"algorithm"`
	Data      map[string]string `toml:"data"`
}

// Parse reads an initdata TOML document.
func Parse(body []byte) (*Document, error) {
	if len(body) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalid, len(body), MaxSize)
	}
	var d Document
	md, err := toml.Decode(string(body), &d)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// The TOML decoder silently drops a non-table value for a map.
	if t := md.Type("data"); t != "" && t != "Hash" {
		return nil, fmt.Errorf("%w: data must be a table, not %s", ErrInvalid, t)
	}
	// Unknown top-level keys are ignored, as upstream ignores them: what
	// the guest trusts is the digest over the whole text, and only
	// version, algorithm and data mean anything.
	if d.Version != Version {
		return nil, fmt.Errorf("%w: version %q, want %s", ErrInvalid, d.Version, Version)
	}
	if _, err := newHash(d.Algorithm); err != nil {
		return nil, err
	}
	return &d, nil
}

func newHash(alg string) (hash.Hash, error) {
	switch alg {
	case "sha256":
		return sha256.New(), nil
	case "sha384":
		return sha512.New384(), nil
	case "sha512":
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("%w: algorithm %q", ErrInvalid, alg)
}

// Digest is the document's algorithm over its raw bytes, as the host
// computed it when it launched the TEE.
func Digest(body []byte) ([]byte, *Document, error) {
	d, err := Parse(body)
	if err != nil {
		return nil, nil, err
	}
	h, _ := newHash(d.Algorithm)
	h.Write(body)
	return h.Sum(nil), d, nil
}

// Keys of the data entries policies see parsed, as Trustee names them.
const (
	AATOML      = "aa.toml"
	CDHTOML     = "cdh.toml"
	PolicyRego  = "policy.rego"
	PolicyClaim = "agent_policy_claims"
)

// policyData starts the data a generated agent policy (Kata's genpolicy)
// ends with: the containers, volumes and settings the policy's rules
// compare requests against.
const policyData = "policy_data := {"

// Claims are the document's data entries as Trustee's attestation service
// exposes them in init_data_claims: aa.toml and cdh.toml parsed into
// objects (kept as strings when they are not TOML), and policy.rego
// replaced by agent_policy_claims, the JSON object its policy_data rule
// holds, when the policy ends with one. Other entries stay strings.
func (d *Document) Claims() map[string]any {
	out := make(map[string]any, len(d.Data))
	for k, v := range d.Data {
		out[k] = v
	}
	for _, k := range [...]string{AATOML, CDHTOML} {
		var parsed map[string]any
		if v, ok := d.Data[k]; ok && toml.Unmarshal([]byte(v), &parsed) == nil {
			out[k] = parsed
		}
	}
	if pd, ok := AgentPolicyData(d.Data[PolicyRego]); ok {
		delete(out, PolicyRego)
		out[PolicyClaim] = pd
	}
	return out
}

// AgentPolicyData returns the value of the policy_data rule a generated
// agent policy ends with: the JSON object from the first "policy_data :=
// {" to the end of the text, which may hold nothing else but white space
// (as Trustee reads it).
func AgentPolicyData(rego string) (map[string]any, bool) {
	i := strings.Index(rego, policyData)
	if i < 0 {
		return nil, false
	}
	dec := json.NewDecoder(strings.NewReader(rego[i+len(policyData)-1:]))
	dec.UseNumber()
	var v map[string]any
	if dec.Decode(&v) != nil || v == nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return v, true
}

// DecodeEntry decodes the TOML text of an entry of the data table (at
// most max bytes) into v, refusing keys v does not have: a typo in a
// measured configuration must not silently turn a setting off.
func DecodeEntry(text string, max int, v any) error {
	if len(text) > max {
		return fmt.Errorf("over %d bytes", max)
	}
	md, err := toml.Decode(text, v)
	if err != nil {
		return err
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("unknown key %s", und[0])
	}
	return nil
}

// FromEntry parses the entry key of an initdata document with parse; ok
// is false when the document has no such entry.
func FromEntry[T any](body []byte, key string, parse func(string) (T, error)) (v T, ok bool, err error) {
	doc, err := Parse(body)
	if err != nil {
		return v, false, err
	}
	text, ok := doc.Data[key]
	if !ok {
		return v, false, nil
	}
	v, err = parse(text)
	return v, err == nil, err
}
