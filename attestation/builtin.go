package attestation

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/cocoon-cc/cocoon/policy"
	"github.com/cocoon-cc/cocoon/rvps"
	"github.com/cocoon-cc/cocoon/store"
)

// PolicyNamespace is the store namespace of attestation policies.
const PolicyNamespace = "attestation-policies"

// DefaultCPUPolicy appraises sample, SNP, TDX and TPM claims against the
// reference values Trustee's default policy names.
//
//go:embed policies/default_cpu.rego
var DefaultCPUPolicy string

// DefaultGPUPolicy appraises NVIDIA GPU claims (device class gpu).
//
//go:embed policies/default_gpu.rego
var DefaultGPUPolicy string

// ReferenceValueBuiltin is the Rego builtin query_reference_value(name):
// the named reference value from the RVPS, or null when there is none.
func ReferenceValueBuiltin(rv *rvps.Service) func(*rego.Rego) {
	// Parsed values, reused while the RVPS answers with the same JSON:
	// every appraisal looks several up.
	var parsed sync.Map // name -> parsedValue
	return rego.Function1(&rego.Function{
		Name:             "query_reference_value",
		Decl:             types.NewFunction(types.Args(types.S), types.A),
		Memoize:          true,
		Nondeterministic: true,
	}, func(bctx rego.BuiltinContext, name *ast.Term) (*ast.Term, error) {
		s, ok := name.Value.(ast.String)
		if !ok {
			return nil, fmt.Errorf("query_reference_value: name must be a string")
		}
		v, err := rv.Query(bctx.Context, string(s))
		if err != nil {
			return nil, err
		}
		if v == nil {
			return ast.NullTerm(), nil
		}
		if p, ok := parsed.Load(string(s)); ok && bytes.Equal(p.(parsedValue).raw, v) {
			return ast.NewTerm(p.(parsedValue).value), nil
		}
		val, err := ast.ValueFromReader(bytes.NewReader(v))
		if err != nil {
			return nil, err
		}
		parsed.Store(string(s), parsedValue{raw: v, value: val})
		return ast.NewTerm(val), nil
	})
}

type parsedValue struct {
	raw   []byte
	value ast.Value
}

// NewPolicies returns the attestation policy engine over s, with the
// query_reference_value builtin and the default CPU policy installed. Its
// decisions are cached while the reference values stay the same.
func NewPolicies(ctx context.Context, s store.Store, rv *rvps.Service) (*policy.Engine, error) {
	e := policy.New(s, PolicyNamespace, ReferenceValueBuiltin(rv))
	e.CacheDecisions(rv.Version, "query_reference_value")
	// Replicas sharing the store: values registered elsewhere count too.
	e.Follow(rvps.Namespace, rv.Forget)
	e.SetSample(map[string]any{"sample": map[string]any{"svn": "1", "launch_digest": "abcde"},
		"report_data": "", "init_data": ""}, nil)
	for class, text := range map[string]string{"cpu": DefaultCPUPolicy, "gpu": DefaultGPUPolicy} {
		if err := e.SetDefault(ctx, DefaultPolicyID+"_"+class, text); err != nil {
			return nil, fmt.Errorf("attestation: default %s policy: %w", class, err)
		}
	}
	return e, nil
}
