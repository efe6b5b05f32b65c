// Package refvalues computes reference values from what a TEE is launched
// with, so an owner can register them before the first guest attests.
package refvalues

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
	"github.com/cocoon-cc/cocoon/initdata"
	"github.com/cocoon-cc/cocoon/rvps"
)

// Inputs are the launch artefacts a calculator may use.
type Inputs struct {
	// InitData is the initdata TOML the pod is started with.
	InitData []byte
}

// Calculator derives named reference values from launch inputs. Each TEE
// measurement (SNP launch digest, TDX MRTD/RTMRs, ...) is one calculator.
type Calculator interface {
	Name() string
	Compute(in Inputs) (map[string]any, error)
}

// Calculators are the built-in calculators.
func Calculators() []Calculator { return []Calculator{InitData{}} }

// InitData computes the value each TEE's initdata field must hold.
type InitData struct{}

// Name implements Calculator.
func (InitData) Name() string { return "initdata" }

// Compute implements Calculator: the digest, and as each TEE carries it
// (SNP HOST_DATA, TDX MRCONFIGID, TPM PCR 8).
func (InitData) Compute(in Inputs) (map[string]any, error) {
	if in.InitData == nil {
		return nil, nil
	}
	digest, _, err := initdata.Digest(in.InitData)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"init_data":        hex.EncodeToString(digest),
		"snp_host_data":    []string{hex.EncodeToString(verifier.Fit(digest, 32))},
		"tdx_mr_config_id": []string{hex.EncodeToString(verifier.Fit(digest, 48))},
		"tpm_pcr08":        []string{hex.EncodeToString(tpm.ReplayInitData(digest))},
	}, nil
}

// Compute runs every calculator that has what it needs.
func Compute(in Inputs) (map[string]any, error) {
	out := map[string]any{}
	for _, c := range Calculators() {
		values, err := c.Compute(in)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Name(), err)
		}
		for k, v := range values {
			out[k] = v
		}
	}
	return out, nil
}

// Message wraps values as an RVPS sample provenance message, ready for
// POST /kbs/v0/reference-value.
func Message(values map[string]any) ([]byte, error) {
	payload, err := json.Marshal(values)
	if err != nil {
		return nil, err
	}
	return json.Marshal(rvps.Message{Version: rvps.MessageVersion, Type: "sample",
		Payload: base64.StdEncoding.EncodeToString(payload)})
}
