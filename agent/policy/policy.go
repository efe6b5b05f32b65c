// Package policy is the guest agent's request policy, compatible with Kata
// Containers' agent policy: a Rego module of package agent_policy with one
// rule per request message (CreateContainerRequest, ExecProcessRequest,
// ReadStreamRequest, ...), evaluated with the request as input, shaped as
// Kata's agent renders it (input.go). A rule allows when it is true, or an
// object whose "allowed" is true and whose "ops" patch the policy state
// (state.go), and whose "message", when it denies, says why in the error; a
// rule the policy does not define denies. As in Kata, a
// policy whose AllowRequestsFailingPolicy is true lets denied requests
// through (debugging only). As with Kata's regorus, a builtin's error makes
// its expression undefined and rules are not type checked; print() output
// is dropped.
package policy

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/proto"
)

var (
	//go:embed default.rego
	defaultPolicy string
	//go:embed allow-all.rego
	allowAllPolicy string
)

// Default is the policy of a pod whose initdata brings none.
func Default() string { return defaultPolicy }

// AllowAll allows every request: for development and tests only.
func AllowAll() string { return allowAllPolicy }

// MaxSize bounds a policy's text.
const MaxSize = 1 << 20

// Errors of the policy engine.
var (
	ErrDenied        = errors.New("denied by the agent policy")
	ErrInvalidPolicy = errors.New("invalid agent policy")
)

const (
	packagePath = "data.agent_policy"
	// failOpenRule is Kata's debugging switch.
	failOpenRule = "AllowRequestsFailingPolicy"
)

// capabilities leave out builtins that reach beyond the request and the
// policy.
var capabilities = func() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	c.Builtins = slices.DeleteFunc(c.Builtins, func(b *ast.Builtin) bool {
		return b.Name == "http.send" || b.Name == "net.lookup_ip_addr" || b.Name == "opa.runtime"
	})
	return c
}()

// Engine evaluates requests against the current policy; safe for
// concurrent use. Like Kata's agent it decides one request at a time, so a
// rule reading the policy state sees every earlier request's changes.
type Engine struct {
	mu  sync.Mutex
	cur *compiled
}

// compiled is one policy and its state.
type compiled struct {
	compiler *ast.Compiler
	state    storage.Store
	rules    map[string]bool                   // the module's rule names
	queries  map[string]rego.PreparedEvalQuery // by rule, prepared on first use
	failOpen bool
}

// New compiles a policy.
func New(ctx context.Context, text string) (*Engine, error) {
	c, err := compile(ctx, text)
	if err != nil {
		return nil, err
	}
	return &Engine{cur: c}, nil
}

// Set replaces the policy (SetPolicy) and its state once the new one
// compiles; a policy that does not compile leaves the current one in force.
func (e *Engine) Set(ctx context.Context, text string) error {
	c, err := compile(ctx, text)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.cur = c
	e.mu.Unlock()
	return nil
}

func compile(ctx context.Context, text string) (*compiled, error) {
	if len(text) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidPolicy, len(text), MaxSize)
	}
	mod, err := ast.ParseModuleWithOpts("agent_policy.rego", text, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		// Kata's policies (genpolicy's rules.rego) are Rego v0.
		var err0 error
		if mod, err0 = ast.ParseModuleWithOpts("agent_policy.rego", text, ast.ParserOptions{RegoVersion: ast.RegoV0}); err0 != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
		}
	}
	if mod == nil || mod.Package.Path.String() != packagePath {
		return nil, fmt.Errorf("%w: want package agent_policy", ErrInvalidPolicy)
	}
	comp := ast.NewCompiler().WithCapabilities(capabilities).
		// Like regorus, which Kata uses: genpolicy output whose policy_data
		// lacks keys its rules name must load (and deny what needs them).
		WithSkipStages(ast.StageCheckTypes)
	if comp.Compile(map[string]*ast.Module{"agent_policy.rego": mod}); comp.Failed() {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPolicy, comp.Errors)
	}
	c := &compiled{compiler: comp, state: newState(), rules: map[string]bool{}, queries: map[string]rego.PreparedEvalQuery{}}
	for _, r := range mod.Rules {
		if len(r.Head.Args) == 0 { // functions are no request's rule
			c.rules[r.Head.Ref()[0].Value.String()] = true
		}
	}
	// Kata reads the switch once, with an empty input; an error is "off".
	d, _ := c.decide(ctx, failOpenRule, ast.NewObject())
	c.failOpen = d.allowed
	return c, nil
}

// Check evaluates the rule named after req's message; method (the ttrpc
// method) only names the request in the error. nil means allowed.
func (e *Engine) Check(ctx context.Context, method string, req proto.Message) error {
	rule := string(req.ProtoReflect().Descriptor().Name())
	input, err := requestInput(req)
	if err != nil {
		return fmt.Errorf("%s (%s) %w: %w", rule, method, ErrDenied, err)
	}
	return e.check(ctx, rule, method, input)
}

// CheckInput is Check for a request given as the input its rule sees (the
// JSON Kata's agent evaluates, as testdata/input holds it), for tools that
// explain a decision; it changes the policy state as Check does.
func (e *Engine) CheckInput(ctx context.Context, rule string, input []byte) error {
	var v any
	if err := util.UnmarshalJSON(input, &v); err != nil {
		return fmt.Errorf("%s input: %w", rule, err)
	}
	value, err := ast.InterfaceToValue(v)
	if err != nil {
		return fmt.Errorf("%s input: %w", rule, err)
	}
	return e.check(ctx, rule, rule, value)
}

func (e *Engine) check(ctx context.Context, rule, method string, input ast.Value) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.cur
	d, err := c.decide(ctx, rule, input)
	switch {
	case err != nil:
		return fmt.Errorf("%s (%s) %w: %w", rule, method, ErrDenied, err)
	case !d.allowed && c.failOpen:
		return nil
	case !d.allowed && d.message != "":
		return fmt.Errorf("%s (%s) %w: %s", rule, method, ErrDenied, d.message)
	case !d.allowed:
		return fmt.Errorf("%s (%s) %w", rule, method, ErrDenied)
	}
	ops := d.ops
	if err := patch(ctx, c.state, ops); err != nil {
		return fmt.Errorf("%s (%s) %w: %w", rule, method, ErrDenied, err)
	}
	return nil
}

// decision is a rule's result.
type decision struct {
	allowed bool
	ops     []any  // state changes of an allowing object
	message string // why an object denied, for the error
}

// decide evaluates rule. An undefined rule or result denies.
func (c *compiled) decide(ctx context.Context, rule string, input ast.Value) (decision, error) {
	result, ok, err := c.value(ctx, rule, input)
	if !ok || err != nil {
		return decision{}, err
	}
	switch v := result.(type) {
	case bool:
		return decision{allowed: v}, nil
	case map[string]any:
		allowed, ok := v["allowed"].(bool)
		if !ok {
			return decision{}, fmt.Errorf("result has no boolean \"allowed\"")
		}
		ops, ok := v["ops"].([]any)
		if !ok && v["ops"] != nil {
			return decision{}, fmt.Errorf("result's \"ops\" is not an array")
		}
		message, ok := v["message"].(string)
		if !ok && v["message"] != nil {
			return decision{}, fmt.Errorf("result's \"message\" is not a string")
		}
		return decision{allowed: allowed, ops: ops, message: message}, nil
	}
	return decision{}, fmt.Errorf("result is neither a boolean nor an object")
}

// value evaluates rule; ok is false when it is undefined.
func (c *compiled) value(ctx context.Context, rule string, input ast.Value) (any, bool, error) {
	if !c.rules[rule] {
		return nil, false, nil
	}
	q, ok := c.queries[rule]
	if !ok {
		var err error
		q, err = rego.New(rego.Query(packagePath+"."+rule), rego.Compiler(c.compiler), rego.Store(c.state),
			rego.Capabilities(capabilities)).PrepareForEval(ctx)
		if err != nil {
			return nil, false, err
		}
		c.queries[rule] = q
	}
	rs, err := q.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil || len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return nil, false, err
	}
	return rs[0].Expressions[0].Value, true, nil
}

// Value is what the policy's rule name says, with no input: settings the
// pod's owner gives the agent in its policy (encrypted_volumes); nil when
// the policy does not define it.
func (e *Engine) Value(ctx context.Context, name string) (any, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, _, err := e.cur.value(ctx, name, ast.NewObject())
	return v, err
}
