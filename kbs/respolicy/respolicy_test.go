package respolicy_test

import (
	"context"
	"testing"

	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/policy"
	"github.com/cocoon-cc/cocoon/store/memory"
)

// claims is the raw form of a verified token's claims, as the KBS passes
// them to the resource policy.
func claims(status, tee string) map[string]any {
	return map[string]any{
		"eat_profile": "tag:github.com,2024:confidential-containers/Trustee",
		"submods": map[string]any{"cpu0": map[string]any{
			"ear.status": status,
			"ear.veraison.annotated-evidence": map[string]any{
				tee:                   map[string]any{"svn": "1"},
				"runtime_data_claims": map[string]any{"nonce": "n"},
			},
		}},
	}
}

var resourceData = map[string]any{"plugin": "resource", "resource-path": []any{"default", "key", "1"}, "query": map[string]any{}}

func TestBuiltinPolicies(t *testing.T) {
	ctx := context.Background()
	e := policy.New(memory.New(), "p")
	for id, text := range map[string]string{"default": respolicy.Default, "affirming": respolicy.Affirming,
		"allow_all": respolicy.AllowAll, "deny_all": respolicy.DenyAll} {
		if _, err := policy.Parse(id, text); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if err := e.Set(ctx, id, text); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	otherPlugin := map[string]any{"plugin": "nebula-ca", "resource-path": []any{"default", "key", "1"}}
	noSubmods := map[string]any{"eat_profile": "x"}
	cases := []struct {
		name  string
		input map[string]any
		data  map[string]any
		want  map[string]bool // policy id -> allowed
	}{
		{"snp affirming", claims("affirming", "snp"), resourceData,
			map[string]bool{"default": true, "affirming": true, "allow_all": true, "deny_all": false}},
		{"tdx affirming", claims("affirming", "tdx"), resourceData,
			map[string]bool{"default": true, "affirming": true, "allow_all": true, "deny_all": false}},
		{"sample affirming", claims("affirming", "sample"), resourceData,
			map[string]bool{"default": false, "affirming": true, "allow_all": true, "deny_all": false}},
		{"snp warning", claims("warning", "snp"), resourceData,
			map[string]bool{"default": false, "affirming": false, "allow_all": true, "deny_all": false}},
		{"snp contraindicated", claims("contraindicated", "snp"), resourceData,
			map[string]bool{"default": false, "affirming": false, "allow_all": true, "deny_all": false}},
		{"snp none", claims("none", "snp"), resourceData,
			map[string]bool{"default": false, "affirming": false, "allow_all": true, "deny_all": false}},
		{"status case", claims("Affirming", "snp"), resourceData,
			map[string]bool{"default": false, "affirming": false, "allow_all": true, "deny_all": false}},
		{"no submods", noSubmods, resourceData,
			map[string]bool{"default": false, "affirming": false, "allow_all": true, "deny_all": false}},
		{"nil input", nil, resourceData,
			map[string]bool{"default": false, "affirming": false, "allow_all": true, "deny_all": false}},
		{"other plugin", claims("affirming", "snp"), otherPlugin,
			map[string]bool{"default": false, "affirming": true, "allow_all": true, "deny_all": false}},
		{"no data", claims("affirming", "snp"), nil,
			map[string]bool{"default": false, "affirming": true, "allow_all": true, "deny_all": false}},
	}
	for _, c := range cases {
		for id, want := range c.want {
			out, err := e.Eval(ctx, id, "data.policy.allow", c.input, c.data)
			if err != nil {
				t.Fatalf("%s/%s: %v", c.name, id, err)
			}
			if got, ok := out.(bool); !ok || got != want {
				t.Errorf("%s: policy %s = %v, want %v", c.name, id, out, want)
			}
		}
	}
	// A sample submodule beside a real TEE's still makes the default deny.
	mixed := claims("affirming", "snp")
	mixed["submods"].(map[string]any)["cpu0"].(map[string]any)["ear.veraison.annotated-evidence"].(map[string]any)["sample"] = map[string]any{}
	if out, _ := e.Eval(ctx, "default", "data.policy.allow", mixed, resourceData); out != false {
		t.Errorf("default with sample evidence: %v", out)
	}
}
