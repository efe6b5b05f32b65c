package snp_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/cocoon-cc/cocoon/attestation"
	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/snp"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// policies are the default CPU policies the claims must satisfy: Cocoon's,
// and Trustee's own when $COCOON_TRUSTEE_SRC names a Trustee git checkout.
func policies(t *testing.T) map[string]string {
	out := map[string]string{"cocoon": attestation.DefaultCPUPolicy}
	if src := os.Getenv("COCOON_TRUSTEE_SRC"); src != "" {
		b, err := exec.Command("git", "-C", src, "show", "HEAD:attestation-service/src/ear_token/ear_default_policy_cpu.rego").Output()
		if err != nil {
			t.Fatalf("Trustee policy: %v", err)
		}
		out["trustee"] = string(b)
	} else {
		t.Log("COCOON_TRUSTEE_SRC unset: Trustee's own policy not evaluated")
	}
	return out
}

// trustClaims evaluates a policy on the claims as the attestation service
// passes them (after a JSON round trip), with reference values refs.
func trustClaims(t *testing.T, policy string, claims verifier.Claims, refs map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(map[string]any{"snp": claims})
	if err != nil {
		t.Fatal(err)
	}
	var input map[string]any
	if err := json.Unmarshal(b, &input); err != nil {
		t.Fatal(err)
	}
	query := rego.Function1(&rego.Function{Name: "query_reference_value", Decl: types.NewFunction(types.Args(types.S), types.A)},
		func(_ rego.BuiltinContext, name *ast.Term) (*ast.Term, error) {
			v, ok := refs[string(name.Value.(ast.String))]
			if !ok {
				return ast.NullTerm(), nil
			}
			val, err := ast.InterfaceToValue(v)
			return ast.NewTerm(val), err
		})
	rs, err := rego.New(rego.Query("data.policy.trust_claims"), rego.Module("policy.rego", policy),
		rego.Input(input), query).Eval(context.Background())
	if err != nil || len(rs) != 1 {
		t.Fatalf("eval: %v %v", rs, err)
	}
	return rs[0].Expressions[0].Value.(map[string]any)
}

func TestDefaultPoliciesAcceptClaims(t *testing.T) {
	ev, err := os.ReadFile(filepath.Join(testutil.Fixtures(t), "trustee/attestation-service/tests/e2e/evidence.json"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := snp.New(snp.Options{DisableKDS: true})
	if err != nil {
		t.Fatal(err)
	}
	tc, err := v.Evaluate(context.Background(), ev, verifier.Expected{})
	if err != nil {
		t.Fatal(err)
	}
	claims := tc[0].Claims
	refs := func() map[string]any {
		return map[string]any{
			"snp_launch_measurement": []any{claims["measurement"]},
			"snp_bootloader":         []any{10}, "snp_microcode": []any{25}, "snp_snp_svn": []any{23}, "snp_tee_svn": []any{0},
			"snp_smt_enabled": true, "snp_tsme_enabled": false, "snp_guest_abi_major": 0, "snp_guest_abi_minor": 0,
			"snp_single_socket": false, "snp_smt_allowed": true,
		}
	}
	cases := []struct {
		name   string
		change func(map[string]any)
		want   map[string]int
	}{
		{"all match", func(map[string]any) {}, map[string]int{"executables": 3, "hardware": 2, "configuration": 2}},
		{"unknown measurement", func(r map[string]any) { r["snp_launch_measurement"] = []any{"00"} }, map[string]int{"executables": 33}},
		{"old microcode", func(r map[string]any) { r["snp_microcode"] = []any{24} }, map[string]int{"hardware": 97}},
		{"other config", func(r map[string]any) { r["snp_smt_allowed"] = false }, map[string]int{"configuration": 3}},
	}
	for name, policy := range policies(t) {
		for _, c := range cases {
			r := refs()
			c.change(r)
			got := trustClaims(t, policy, claims, r)
			for k, want := range c.want {
				if n, _ := got[k].(json.Number).Int64(); n != int64(want) {
					t.Errorf("%s policy, %s: %s = %v, want %d", name, c.name, k, got[k], want)
				}
			}
		}
	}
}
