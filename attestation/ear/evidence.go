package ear

import (
	"errors"

	jsonv2 "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"
)

// ErrNoRuntimeData: the appraisal carries no runtime data claims.
var ErrNoRuntimeData = errors.New("ear: no runtime_data_claims in the appraisal")

// TEE is the name of the TEE whose claims the appraisal annotates (the
// annotated evidence's one key that is not report or init data), "" for
// none.
func (a Appraisal) TEE() string {
	for k := range a.AnnotatedEvidence {
		switch k {
		case "report_data", "runtime_data_claims", "init_data", "init_data_claims":
		default:
			return k
		}
	}
	return ""
}

// RuntimeData decodes the runtime data the evidence was bound to (the
// session's nonce and the TEE key, for KBS attestations) into v.
func (a Appraisal) RuntimeData(v any) error {
	raw, ok := a.AnnotatedEvidence["runtime_data_claims"]
	if !ok {
		return ErrNoRuntimeData
	}
	// encoding/json's semantics, by encoding/json/v2's faster decoder: the
	// KBS reads the TEE key here at every release.
	return jsonv2.Unmarshal(raw, v, jsonv1.DefaultOptionsV1())
}
