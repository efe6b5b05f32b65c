// Package ear defines the EAT Attestation Result (EAR) token the attestation
// service issues: its claims, the AR4SI trustworthiness vector and how the
// appraisal status follows from it, and ES256 signing and verification.
package ear

import (
	"encoding/json"
	"fmt"
)

// Profile is the eat_profile Trustee's tokens carry.
const Profile = "tag:github.com,2024:confidential-containers/Trustee"

// Status is an appraisal status tier: none (nothing claimed), then from
// best to worst affirming, warning, contraindicated.
type Status string

// The AR4SI status tiers.
const (
	StatusNone            Status = "none"
	StatusAffirming       Status = "affirming"
	StatusWarning         Status = "warning"
	StatusContraindicated Status = "contraindicated"
)

var statusRank = map[Status]int{StatusNone: 0, StatusAffirming: 1, StatusWarning: 2, StatusContraindicated: 3}

// TierOf maps one trust-claim value to its tier.
func TierOf(v int) Status {
	if v < 0 {
		v = -v
	}
	switch {
	case v <= 1:
		return StatusNone
	case v <= 31:
		return StatusAffirming
	case v <= 95:
		return StatusWarning
	}
	return StatusContraindicated
}

// TrustVector is the AR4SI trustworthiness vector.
type TrustVector struct {
	InstanceIdentity int `json:"instance-identity"`
	Configuration    int `json:"configuration"`
	Executables      int `json:"executables"`
	FileSystem       int `json:"file-system"`
	Hardware         int `json:"hardware"`
	RuntimeOpaque    int `json:"runtime-opaque"`
	StorageOpaque    int `json:"storage-opaque"`
	SourcedData      int `json:"sourced-data"`
}

// Set assigns the claim named as AR4SI names it; ok is false for an unknown
// name.
func (v *TrustVector) Set(name string, value int) (ok bool) {
	f := v.field(name)
	if f == nil {
		return false
	}
	*f = value
	return true
}

func (v *TrustVector) field(name string) *int {
	switch name {
	case "instance-identity":
		return &v.InstanceIdentity
	case "configuration":
		return &v.Configuration
	case "executables":
		return &v.Executables
	case "file-system":
		return &v.FileSystem
	case "hardware":
		return &v.Hardware
	case "runtime-opaque":
		return &v.RuntimeOpaque
	case "storage-opaque":
		return &v.StorageOpaque
	case "sourced-data":
		return &v.SourcedData
	}
	return nil
}

func (v TrustVector) values() []int {
	return []int{v.InstanceIdentity, v.Configuration, v.Executables, v.FileSystem,
		v.Hardware, v.RuntimeOpaque, v.StorageOpaque, v.SourcedData}
}

// names are the claims' names in the order of values.
var names = []string{"instance-identity", "configuration", "executables", "file-system",
	"hardware", "runtime-opaque", "storage-opaque", "sourced-data"}

// Unaffirmed lists the claims in the warning or contraindicated tier, as
// "name value": what keeps an appraisal from affirming.
func (v TrustVector) Unaffirmed() []string {
	var out []string
	for i, x := range v.values() {
		if t := TierOf(x); t == StatusWarning || t == StatusContraindicated {
			out = append(out, fmt.Sprintf("%s %d", names[i], x))
		}
	}
	return out
}

// AnySet reports whether any claim is non-zero.
func (v TrustVector) AnySet() bool {
	for _, x := range v.values() {
		if x != 0 {
			return true
		}
	}
	return false
}

// Status is the worst tier over the vector.
func (v TrustVector) Status() Status {
	worst := StatusNone
	for _, x := range v.values() {
		if t := TierOf(x); statusRank[t] > statusRank[worst] {
			worst = t
		}
	}
	return worst
}

// Appraisal is one submodule's result.
type Appraisal struct {
	Status            Status                     `json:"ear.status"`
	TrustVector       TrustVector                `json:"ear.trustworthiness-vector"`
	PolicyID          string                     `json:"ear.appraisal-policy-id,omitempty"`
	AnnotatedEvidence map[string]json.RawMessage `json:"ear.veraison.annotated-evidence,omitempty"`
}

// VerifierID names who issued the result.
type VerifierID struct {
	Developer string `json:"developer"`
	Build     string `json:"build"`
}

// Claims is the body of an EAR token.
type Claims struct {
	Profile    string               `json:"eat_profile"`
	IssuedAt   int64                `json:"iat"`
	Expiry     int64                `json:"exp"`
	Issuer     string               `json:"iss,omitempty"`
	VerifierID VerifierID           `json:"ear.verifier-id"`
	Submods    map[string]Appraisal `json:"submods"`
}

// Map is the claims as decoding the token's payload into an `any` gives
// them (JSON objects as maps, numbers as float64), built without a JSON
// round trip: it is the resource policy's input for a token this service
// has just signed. Annotated evidence stays raw JSON, for OPA to decode
// the parts a policy reads.
func (c *Claims) Map() map[string]any {
	submods := make(map[string]any, len(c.Submods))
	for name, a := range c.Submods {
		submods[name] = a.fields()
	}
	m := map[string]any{
		"eat_profile": c.Profile,
		"iat":         float64(c.IssuedAt),
		"exp":         float64(c.Expiry),
		"ear.verifier-id": map[string]any{
			"developer": c.VerifierID.Developer,
			"build":     c.VerifierID.Build,
		},
		"submods": submods,
	}
	if c.Issuer != "" {
		m["iss"] = c.Issuer
	}
	return m
}

func (a *Appraisal) fields() map[string]any {
	tv := a.TrustVector
	m := map[string]any{
		"ear.status": string(a.Status),
		"ear.trustworthiness-vector": map[string]any{
			"instance-identity": float64(tv.InstanceIdentity),
			"configuration":     float64(tv.Configuration),
			"executables":       float64(tv.Executables),
			"file-system":       float64(tv.FileSystem),
			"hardware":          float64(tv.Hardware),
			"runtime-opaque":    float64(tv.RuntimeOpaque),
			"storage-opaque":    float64(tv.StorageOpaque),
			"sourced-data":      float64(tv.SourcedData),
		},
	}
	if a.PolicyID != "" {
		m["ear.appraisal-policy-id"] = a.PolicyID
	}
	if len(a.AnnotatedEvidence) > 0 {
		ev := make(map[string]any, len(a.AnnotatedEvidence))
		for k, v := range a.AnnotatedEvidence {
			ev[k] = v
		}
		m["ear.veraison.annotated-evidence"] = ev
	}
	return m
}
