package policy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/cocoon-cc/cocoon/policy"
	"github.com/cocoon-cc/cocoon/store/bolt"
	"github.com/cocoon-cc/cocoon/store/memory"
)

const v1Allow = `package policy

import rego.v1

default allow := false

allow if {
	input.user == "alice"
}
`

// Trustee's older policies are Rego v0: no "if", "=" for defaults.
const v0Allow = `package policy

default allow = false

allow {
	input.user == "alice"
}

names[n] {
	n := input.names[_]
}
`

const dataPolicy = `package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	data["resource-path"][0] == "default"
	input.ok == true
}

echo := data.id

same if data.id == input.id
`

var ctx = context.Background()

func newEngine(t *testing.T) *policy.Engine {
	t.Helper()
	return policy.New(memory.New(), "policies")
}

func eval(t *testing.T, e *policy.Engine, id, query string, input, data map[string]any) any {
	t.Helper()
	out, err := e.Eval(ctx, id, query, input, data)
	if err != nil {
		t.Fatalf("Eval(%s, %s): %v", id, query, err)
	}
	return out
}

func TestSetGetList(t *testing.T) {
	e := newEngine(t)
	if ids, err := e.List(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("List on empty = %v, %v", ids, err)
	}
	if _, err := e.Get(ctx, "nope"); !errors.Is(err, policy.ErrNotFound) {
		t.Errorf("Get unknown: %v, want ErrNotFound", err)
	}
	if _, err := e.Eval(ctx, "nope", "data.policy.allow", nil, nil); !errors.Is(err, policy.ErrNotFound) {
		t.Errorf("Eval unknown: %v, want ErrNotFound", err)
	}
	for _, id := range []string{"b", "a", "c"} {
		if err := e.Set(ctx, id, v1Allow); err != nil {
			t.Fatal(err)
		}
	}
	ids, err := e.List(ctx)
	if err != nil || !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Errorf("List = %v, %v", ids, err)
	}
	text, err := e.Get(ctx, "a")
	if err != nil || text != v1Allow {
		t.Errorf("Get = %q, %v", text, err)
	}
	if got := eval(t, e, "a", "data.policy.allow", map[string]any{"user": "alice"}, nil); got != true {
		t.Errorf("alice: %v", got)
	}
	if got := eval(t, e, "a", "data.policy.allow", map[string]any{"user": "bob"}, nil); got != false {
		t.Errorf("bob: %v", got)
	}
	// An undefined query is nil, not an error.
	if got := eval(t, e, "a", "data.policy.nothing", nil, nil); got != nil {
		t.Errorf("undefined rule: %v", got)
	}
}

func TestSetReplaces(t *testing.T) {
	e := newEngine(t)
	if err := e.Set(ctx, "p", v1Allow); err != nil {
		t.Fatal(err)
	}
	if eval(t, e, "p", "data.policy.allow", map[string]any{"user": "alice"}, nil) != true {
		t.Fatal("first policy")
	}
	deny := "package policy\nimport rego.v1\ndefault allow := false\n"
	if err := e.Set(ctx, "p", deny); err != nil {
		t.Fatal(err)
	}
	if got := eval(t, e, "p", "data.policy.allow", map[string]any{"user": "alice"}, nil); got != false {
		t.Errorf("replaced policy still allows: %v", got)
	}
	if text, _ := e.Get(ctx, "p"); text != deny {
		t.Errorf("stored %q", text)
	}
}

func TestSetDefault(t *testing.T) {
	e := newEngine(t)
	if err := e.SetDefault(ctx, "p", v1Allow); err != nil {
		t.Fatal(err)
	}
	if text, _ := e.Get(ctx, "p"); text != v1Allow {
		t.Fatalf("SetDefault on empty stored %q", text)
	}
	custom := "package policy\nimport rego.v1\ndefault allow := true\n"
	if err := e.Set(ctx, "p", custom); err != nil {
		t.Fatal(err)
	}
	if err := e.SetDefault(ctx, "p", v1Allow); err != nil {
		t.Fatal(err)
	}
	if text, _ := e.Get(ctx, "p"); text != custom {
		t.Errorf("SetDefault overwrote the stored policy: %q", text)
	}
	if eval(t, e, "p", "data.policy.allow", nil, nil) != true {
		t.Error("the custom policy is not the one evaluated")
	}
	// An invalid default is refused.
	if err := e.SetDefault(ctx, "q", "package nope"); !errors.Is(err, policy.ErrInvalid) {
		t.Errorf("invalid default: %v", err)
	}
}

func TestSyntaxVersions(t *testing.T) {
	e := newEngine(t)
	for name, text := range map[string]string{"v1": v1Allow, "v0": v0Allow} {
		if err := e.Set(ctx, name, text); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := policy.Parse(name, text); err != nil {
			t.Errorf("Parse %s: %v", name, err)
		}
		if got := eval(t, e, name, "data.policy.allow", map[string]any{"user": "alice"}, nil); got != true {
			t.Errorf("%s alice: %v", name, got)
		}
		if got := eval(t, e, name, "data.policy.allow", map[string]any{"user": "eve"}, nil); got != false {
			t.Errorf("%s eve: %v", name, got)
		}
	}
	got := eval(t, e, "v0", "data.policy.names", map[string]any{"names": []any{"x", "y"}}, nil)
	if b, _ := json.Marshal(got); string(b) != `["x","y"]` {
		t.Errorf("v0 partial set: %s", b)
	}
}

func TestInvalid(t *testing.T) {
	cases := map[string]string{
		"empty":          "",
		"comment only":   "# nothing\n",
		"wrong package":  "package foo\nimport rego.v1\ndefault allow := true\n",
		"sub package":    "package policy.sub\nimport rego.v1\ndefault allow := true\n",
		"parent package": "package poli\ndefault allow = true\n",
		"syntax error":   "package policy\nallow if {",
		"not rego":       `{"policy": "allow"}`,
		"unsafe var":     "package policy\nimport rego.v1\nallow if { x }\n",
		"undefined func": "package policy\nimport rego.v1\nallow if { no_such_function(1) }\n",
		"type error":     "package policy\nimport rego.v1\nallow if { count(1) > 0 }\n",
		"two defaults":   "package policy\nimport rego.v1\ndefault allow := true\ndefault allow := false\n",
		"http.send": `package policy
import rego.v1
allow if {
	http.send({"method": "get", "url": "http://example.com"}).status_code == 200
}
`,
		"net.lookup_ip_addr": "package policy\nimport rego.v1\nallow if { count(net.lookup_ip_addr(\"example.com\")) > 0 }\n",
		"opa.runtime":        "package policy\nimport rego.v1\nallow if { opa.runtime().env.HOME }\n",
		"v0 http.send":       "package policy\nallow { http.send({\"method\": \"get\", \"url\": \"http://x\"}) }\n",
		"oversize":           "package policy\n" + strings.Repeat("# padding padding padding\n", policy.MaxSize/26+1),
	}
	for name, text := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEngine(t)
			if err := e.Set(ctx, "p", text); !errors.Is(err, policy.ErrInvalid) {
				t.Fatalf("Set: %v, want ErrInvalid", err)
			}
			// Nothing was stored.
			if _, err := e.Get(ctx, "p"); !errors.Is(err, policy.ErrNotFound) {
				t.Errorf("a refused policy was stored: %v", err)
			}
			if ids, _ := e.List(ctx); len(ids) != 0 {
				t.Errorf("List = %v", ids)
			}
		})
	}
	// A refused Set leaves the previous policy in place.
	e := newEngine(t)
	if err := e.Set(ctx, "p", v1Allow); err != nil {
		t.Fatal(err)
	}
	if err := e.Set(ctx, "p", cases["http.send"]); !errors.Is(err, policy.ErrInvalid) {
		t.Fatal(err)
	}
	if text, _ := e.Get(ctx, "p"); text != v1Allow {
		t.Errorf("previous policy replaced by %q", text)
	}
	// Just under the limit is fine.
	pad := policy.MaxSize - len(v1Allow) - 1
	if err := e.Set(ctx, "big", v1Allow+"#"+strings.Repeat("x", pad-1)+"\n"); err != nil {
		t.Errorf("policy of MaxSize bytes: %v", err)
	}
}

func TestEvalData(t *testing.T) {
	e := newEngine(t)
	if err := e.Set(ctx, "p", dataPolicy); err != nil {
		t.Fatal(err)
	}
	data := map[string]any{"plugin": "resource", "resource-path": []any{"default", "key", "1"}, "query": map[string]any{}}
	if got := eval(t, e, "p", "data.policy.allow", map[string]any{"ok": true}, data); got != true {
		t.Errorf("with data: %v", got)
	}
	other := map[string]any{"plugin": "resource", "resource-path": []any{"other", "key", "1"}}
	if got := eval(t, e, "p", "data.policy.allow", map[string]any{"ok": true}, other); got != false {
		t.Errorf("other repository: %v", got)
	}
	// Without data, data.plugin is undefined: the default applies.
	if got := eval(t, e, "p", "data.policy.allow", map[string]any{"ok": true}, nil); got != false {
		t.Errorf("nil data: %v", got)
	}
	if got := eval(t, e, "p", "data.policy.echo", nil, nil); got != nil {
		t.Errorf("nil data echo: %v", got)
	}
	// Data of one evaluation does not linger into the next.
	eval(t, e, "p", "data.policy.echo", nil, map[string]any{"id": "first"})
	if got := eval(t, e, "p", "data.policy.echo", nil, nil); got != nil {
		t.Errorf("data leaked into a later evaluation: %v", got)
	}
	// Nil input is fine too.
	if got := eval(t, e, "p", "data.policy.allow", nil, data); got != false {
		t.Errorf("nil input: %v", got)
	}
}

// TestRawJSONInput: input values that are raw JSON (a remembered token's
// annotated evidence) read as the JSON they hold.
func TestRawJSONInput(t *testing.T) {
	e := newEngine(t)
	if err := e.Set(ctx, "p", `package policy
import rego.v1
default allow := false
allow if {
	input.ev.sample.svn == "1"
	input.ev.sample.minor >= 2
	not input.ev.snp
}`); err != nil {
		t.Fatal(err)
	}
	for raw, want := range map[string]bool{
		`{"sample":{"svn":"1","minor":2}}`:          true,
		`{"sample":{"svn":"1","minor":1.5}}`:        false,
		`{"sample":{"svn":"1","minor":3},"snp":{}}`: false,
	} {
		ev := map[string]any{}
		if err := json.Unmarshal([]byte(raw), &ev); err != nil {
			t.Fatal(err)
		}
		var parts map[string]json.RawMessage
		json.Unmarshal([]byte(raw), &parts)
		lazy := map[string]any{}
		for k, v := range parts {
			lazy[k] = v
		}
		for name, in := range map[string]map[string]any{"decoded": ev, "raw": lazy} {
			if got := eval(t, e, "p", "data.policy.allow", map[string]any{"ev": in}, nil); got != want {
				t.Errorf("%s %s: allow = %v, want %v", name, raw, got, want)
			}
		}
	}
}

// TestDataCannotOverridePolicy: request data written under "policy" must
// not replace the policy's own rules.
func TestDataCannotOverridePolicy(t *testing.T) {
	e := newEngine(t)
	deny := "package policy\nimport rego.v1\ndefault allow := false\n"
	if err := e.Set(ctx, "p", deny); err != nil {
		t.Fatal(err)
	}
	out, err := e.Eval(ctx, "p", "data.policy.allow", nil, map[string]any{"policy": map[string]any{"allow": true}})
	if err == nil && out == true {
		t.Fatal("data overrode the policy's decision")
	}
	if err != nil && !errors.Is(err, policy.ErrEval) {
		t.Errorf("error %v, want ErrEval", err)
	}
}

func TestEvalRuntimeError(t *testing.T) {
	e := newEngine(t)
	text := "package policy\nimport rego.v1\nn := to_number(input.s)\n"
	if err := e.Set(ctx, "p", text); err != nil {
		t.Fatal(err)
	}
	if got := eval(t, e, "p", "data.policy.n", map[string]any{"s": "42"}, nil); fmt.Sprint(got) != "42" {
		t.Errorf("n = %v", got)
	}
	if _, err := e.Eval(ctx, "p", "data.policy.n", map[string]any{"s": "forty-two"}, nil); !errors.Is(err, policy.ErrEval) {
		t.Errorf("builtin error: %v, want ErrEval", err)
	}
	// Complete rules with two values conflict at evaluation time.
	if err := e.Set(ctx, "c", "package policy\nimport rego.v1\nallow := true if input.a\nallow := false if input.b\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Eval(ctx, "c", "data.policy.allow", map[string]any{"a": true, "b": true}, nil); !errors.Is(err, policy.ErrEval) {
		t.Errorf("conflict: %v, want ErrEval", err)
	}
	if _, err := e.Eval(ctx, "p", "data.policy[", nil, nil); !errors.Is(err, policy.ErrInvalid) {
		t.Errorf("bad query: %v, want ErrInvalid", err)
	}
}

func TestConcurrentEvalIsolation(t *testing.T) {
	e := newEngine(t)
	if err := e.Set(ctx, "p", dataPolicy); err != nil {
		t.Fatal(err)
	}
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 5 {
				id := fmt.Sprintf("caller-%d-%d", i, round)
				var data map[string]any
				if i%10 != 0 {
					data = map[string]any{"id": id}
				}
				out, err := e.Eval(ctx, "p", "data.policy.echo", map[string]any{"id": id}, data)
				if err != nil {
					errs <- err
					return
				}
				want := any(id)
				if data == nil {
					want = nil
				}
				if out != want {
					errs <- fmt.Errorf("%s saw data.id = %v", id, out)
					return
				}
				same, err := e.Eval(ctx, "p", "data.policy.same", map[string]any{"id": id}, data)
				if err != nil {
					errs <- err
					return
				}
				if data != nil && same != true {
					errs <- fmt.Errorf("%s: data.id != input.id", id)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	s1, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	e1 := policy.New(s1, "ns")
	if err := e1.Set(ctx, "p", v0Allow); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	e2 := policy.New(s2, "ns")
	if got := eval(t, e2, "p", "data.policy.allow", map[string]any{"user": "alice"}, nil); got != true {
		t.Errorf("after restart: %v", got)
	}
	if err := e2.SetDefault(ctx, "p", "package policy\ndefault allow = false\n"); err != nil {
		t.Fatal(err)
	}
	if text, _ := e2.Get(ctx, "p"); text != v0Allow {
		t.Error("SetDefault after restart replaced the stored policy")
	}
	// Namespaces are separate.
	if _, err := policy.New(s2, "other").Get(ctx, "p"); !errors.Is(err, policy.ErrNotFound) {
		t.Errorf("other namespace: %v", err)
	}
}

func TestCustomBuiltin(t *testing.T) {
	calls := 0
	double := rego.Function1(&rego.Function{Name: "double", Decl: types.NewFunction(types.Args(types.N), types.N)},
		func(_ rego.BuiltinContext, a *ast.Term) (*ast.Term, error) {
			calls++
			n, _ := a.Value.(ast.Number).Int()
			return ast.IntNumberTerm(2 * n), nil
		})
	st := memory.New()
	e := policy.New(st, "ns", double)
	text := "package policy\nimport rego.v1\nx := double(input.n)\n"
	if err := e.Set(ctx, "p", text); err != nil {
		t.Fatal(err)
	}
	if got := eval(t, e, "p", "data.policy.x", map[string]any{"n": 21}, nil); fmt.Sprint(got) != "42" {
		t.Errorf("double(21) = %v", got)
	}
	if calls == 0 {
		t.Error("the builtin was not called")
	}
	// An engine without the builtin cannot compile the stored policy.
	if _, err := policy.New(st, "ns").Eval(ctx, "p", "data.policy.x", nil, nil); !errors.Is(err, policy.ErrInvalid) {
		t.Errorf("without the builtin: %v, want ErrInvalid", err)
	}
}
