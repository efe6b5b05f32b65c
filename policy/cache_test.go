package policy

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/cocoon-cc/cocoon/store/memory"
)

func TestInputPaths(t *testing.T) {
	for name, c := range map[string]struct {
		text  string
		paths string // sorted, "|"-separated; "-" when not cacheable
	}{
		"fixed paths":              {`allow if { input.a.b == 1; input["c"] > 2 }`, "a.b|c"},
		"variable key":             {`allow if { some k; input.a[k].x == 1 }`, "a"},
		"key read from the input":  {`allow if { input.a[input.k] == 1 }`, "a|k"},
		"whole input":              {`allow if { x := input; x.a == 1 }`, ""},
		"functions":                {`f(x) := x + 1` + "\n" + `allow if { f(input.n) == 2; is_number(input.n) }`, "n|n"},
		"membership":               {`allow if { input.v in ["a", "b"] }`, "v"},
		"comprehension":            {`allow if { count([x | some x in input.xs; x > 1]) > 0 }`, "xs"},
		"with":                     {`r if input.a` + "\n" + `allow if { r with input.a as input.b }`, "a|a|b"},
		"tracked builtin":          {`allow if { input.v == tracked(1) }`, "v"},
		"time":                     {`allow if { time.now_ns() > input.t }`, "-"},
		"random":                   {`allow if { rand.intn("x", 10) > input.t }`, "-"},
		"untracked custom builtin": {`allow if { untracked(1) == input.t }`, "-"},
		"import":                   {"import input.a as a\nallow if { a.b == 1 }", "-"},
		"every":                    {`allow if { every x in input.xs { x > input.min } }`, "min|xs"},
		"future keywords":          {"import future.keywords.in\nallow if { input.v in [1] }", "v"},
		"else":                     {"r := 1 if input.a\nelse := 2 if input.b", "a|b"},
		"clock in a head":          {"t := time.now_ns()\nallow if input.a", "-"},
		"token validity":           {`allow if { [ok, _, _] := io.jwt.decode_verify(input.jwt, {"secret": "s"}); ok }`, "-"},
		"certificate validity":     {`allow if { [ok, _] := crypto.x509.parse_and_verify_certificates(input.pem); ok }`, "-"},
	} {
		t.Run(name, func(t *testing.T) {
			mod, err := Parse("p", "package policy\nimport rego.v1\n"+c.text+"\n")
			if err != nil {
				t.Fatal(err)
			}
			paths, ok := inputPaths(mod, map[string]bool{"tracked": true})
			got := "-"
			if ok {
				var s []string
				for _, p := range paths {
					s = append(s, strings.Join(p, "."))
				}
				slices.Sort(s)
				got = strings.Join(s, "|")
			}
			if got != c.paths {
				t.Errorf("paths %q, want %q", got, c.paths)
			}
		})
	}
}

// TestAppendValue: values OPA tells apart get different keys.
func TestAppendValue(t *testing.T) {
	seen := map[[sha256.Size]byte]string{}
	for _, v := range []any{
		nil, true, false, "", "a", "\xff", "\xfe", "\ufffd", json.Number("1"), json.Number("1.0"), 1.0, 2,
		[]any{"a", "b"}, []any{"ab"}, []string{"a", "b"}, map[string]any{"a": "b"}, map[string]any{"ab": ""},
		json.RawMessage(`{"a":1}`), json.RawMessage(`{"a": 1}`), struct{ A int }{1}, []byte("x"),
	} {
		b, ok := appendValue(nil, v)
		if !ok {
			t.Fatalf("%#v: not hashed", v)
		}
		k := sha256.Sum256(b)
		if prev, dup := seen[k]; dup {
			t.Errorf("%#v hashes as %s", v, prev)
		}
		seen[k] = fmt.Sprintf("%#v", v)
	}
	if _, ok := appendValue(nil, map[string]any{"f": func() {}}); ok {
		t.Error("a func was hashed")
	}
	if _, ok := appendValue(nil, ast.String("x")); ok {
		t.Error("an AST value was hashed")
	}
}

// TestCachedDecisions: a decision is reused only for an input the policy
// cannot tell apart, and only under the same version.
func TestCachedDecisions(t *testing.T) {
	var evals atomic.Int64
	var version atomic.Uint64
	counted := rego.Function1(&rego.Function{Name: "counted", Decl: types.NewFunction(types.Args(types.A), types.A), Nondeterministic: true},
		func(_ rego.BuiltinContext, x *ast.Term) (*ast.Term, error) {
			evals.Add(1)
			return x, nil
		})
	e := New(memory.New(), "p", counted)
	e.CacheDecisions(version.Load, "counted")
	ctx := context.Background()
	if err := e.Set(ctx, "p", "package policy\nimport rego.v1\nallow if counted(input.a.ok) == true\nallow if data.force\n"); err != nil {
		t.Fatal(err)
	}
	if err := e.Set(ctx, "clock", "package policy\nimport rego.v1\nallow if { counted(time.now_ns()) > 0; input.a.ok }\n"); err != nil {
		t.Fatal(err)
	}
	decide := func(id string, input, data map[string]any) bool {
		t.Helper()
		out, err := e.Eval(ctx, id, "data.policy.allow", input, data)
		if err != nil {
			t.Fatal(err)
		}
		return out == true
	}
	yes := map[string]any{"a": map[string]any{"ok": true, "noise": "1"}, "nonce": "1"}
	if !decide("p", yes, nil) || evals.Load() != 1 {
		t.Fatalf("first decision: %d evaluations", evals.Load())
	}
	// Other values where the policy does not read: the cached decision.
	same := map[string]any{"a": map[string]any{"ok": true, "noise": "2"}, "nonce": "2"}
	if !decide("p", same, nil) || evals.Load() != 1 {
		t.Errorf("same decision: %d evaluations", evals.Load())
	}
	// A value it reads, or its absence, is another decision.
	for _, in := range []map[string]any{{"a": map[string]any{"ok": false}}, {"a": map[string]any{}}, {}, {"a": "ok"}} {
		if decide("p", in, nil) {
			t.Errorf("allowed %v", in)
		}
	}
	if evals.Load() != 2 { // only {"a": {"ok": false}} reaches counted
		t.Errorf("%d calls of counted, want 2", evals.Load())
	}
	// The request's data is part of the decision.
	if !decide("p", map[string]any{}, map[string]any{"force": true}) {
		t.Error("data ignored")
	}
	// A new version (the builtin's world changed) evaluates again.
	before := evals.Load()
	version.Add(1)
	decide("p", yes, nil)
	if evals.Load() != before+1 {
		t.Errorf("new version: %d evaluations", evals.Load()-before)
	}
	// Replacing the policy drops its decisions.
	e.Set(ctx, "p", "package policy\nimport rego.v1\nallow := false\n")
	if decide("p", yes, nil) {
		t.Error("decision of the replaced policy")
	}
	// A policy reading the clock is evaluated every time.
	before = evals.Load()
	decide("clock", yes, nil)
	decide("clock", yes, nil)
	if evals.Load() != before+2 {
		t.Errorf("clock policy: %d evaluations for 2 decisions", evals.Load()-before)
	}
}

// fuzzPolicy reads the input at fixed paths and through variable keys, as
// attestation and resource policies do.
const fuzzPolicy = `package policy
import rego.v1
default allow := false
allow if {
	input.a.status == "ok"
	input.a.n >= 2
	not input.a.debug
}
allow if {
	some k
	input.m[k] == "x"
	startswith(k, "p")
}
level := 3 if input.tee.svn in ["1", "2"]
else := 1 if input.tee
out := {"allow": allow, "level": level, "list": count(object.get(input.a, "list", []))}
`

// FuzzDecisionCache: whatever was decided before, a cached engine decides
// every input as an engine without the cache does.
func FuzzDecisionCache(f *testing.F) {
	f.Add(`{"a":{"status":"ok","n":2}}`, `{"a":{"status":"ok","n":1}}`)
	f.Add(`{"a":{"status":"ok","n":3,"x":1}}`, `{"a":{"status":"ok","n":3,"debug":true}}`)
	f.Add(`{"m":{"px":"x"}}`, `{"m":{"qx":"x"}}`)
	f.Add(`{"tee":{"svn":"1"}}`, `{"tee":{"svn":"3"}}`)
	f.Add(`{"tee":{"svn":"\xff"}}`, `{"tee":{"svn":"\xfe"}}`)
	f.Add(`{"a":[1]}`, `{"a":{"status":"ok","n":2.5}}`)
	f.Add(`{"a":{"list":[1,2]},"b":1}`, `{"a":{"list":[1]},"b":1}`)
	// The cache keys on parts of the input, not all of it.
	mod, _ := Parse("p", fuzzPolicy)
	if paths, ok := inputPaths(mod, nil); !ok || slices.ContainsFunc(paths, func(p []string) bool { return len(p) == 0 }) {
		f.Fatalf("decisions keyed on the whole input: %v", paths)
	}
	ctx := context.Background()
	cached := New(memory.New(), "p")
	cached.CacheDecisions(nil)
	plain := New(memory.New(), "p")
	for _, e := range []*Engine{cached, plain} {
		if err := e.Set(ctx, "p", fuzzPolicy); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, first, second string) {
		for _, doc := range []string{first, second} {
			var input map[string]any
			if json.Unmarshal([]byte(doc), &input) != nil {
				return
			}
			got, err1 := cached.Eval(ctx, "p", "data.policy.out", input, nil)
			want, err2 := plain.Eval(ctx, "p", "data.policy.out", input, nil)
			if (err1 == nil) != (err2 == nil) || !reflect.DeepEqual(got, want) {
				t.Fatalf("input %s: cached %v (%v), evaluated %v (%v)", doc, got, err1, want, err2)
			}
		}
	})
}

// TestDistinctPaths: repeated paths and paths below another one are
// dropped from the key, which holds their values already.
func TestDistinctPaths(t *testing.T) {
	got := distinctPaths([][]string{{"a", "b"}, {"c"}, {"a"}, {"a", "b"}, {"c"}, {"ab"}, {"a", "c", "d"}})
	want := [][]string{{"a"}, {"ab"}, {"c"}}
	if !slices.EqualFunc(got, want, slices.Equal[[]string]) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := distinctPaths([][]string{{"a"}, nil, {"b", "c"}}); len(got) != 1 || got[0] != nil {
		t.Errorf("whole input: got %q", got)
	}
}
