// Package policy is the guest agent's request policy, compatible with Kata
// Containers' agent policy: a Rego module of package agent_policy with one
// rule per request message (CreateContainerRequest, ExecProcessRequest,
// ReadStreamRequest, ...), evaluated with the request as input, its fields
// named as in the protobuf definition. A rule allows when it is true, or an
// object whose "allowed" is true; a rule the policy does not define
// denies.
package policy

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containerd/ttrpc"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent" // registers the request types
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

// packagePath is the Rego package of an agent policy.
const packagePath = "data.agent_policy"

// unsafeBuiltins may not be called: a decision depends on the request only.
var unsafeBuiltins = map[string]struct{}{"http.send": {}, "net.lookup_ip_addr": {}, "opa.runtime": {}}

// Engine evaluates requests against the current policy; safe for
// concurrent use.
type Engine struct {
	cur atomic.Pointer[compiled]
}

type compiled struct {
	module *ast.Module
	rules  sync.Map // rule name -> *rego.PreparedEvalQuery
}

// New compiles a policy.
func New(ctx context.Context, text string) (*Engine, error) {
	e := &Engine{}
	if err := e.Set(ctx, text); err != nil {
		return nil, err
	}
	return e, nil
}

// Set replaces the policy (SetPolicy) once the new one compiles.
func (e *Engine) Set(ctx context.Context, text string) error {
	if len(text) > MaxSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidPolicy, len(text), MaxSize)
	}
	mod, err := ast.ParseModuleWithOpts("agent_policy.rego", text, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		// Kata's policies are often written in Rego v0 syntax.
		var err0 error
		if mod, err0 = ast.ParseModuleWithOpts("agent_policy.rego", text, ast.ParserOptions{RegoVersion: ast.RegoV0}); err0 != nil {
			return fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
		}
	}
	if mod == nil || mod.Package.Path.String() != packagePath {
		return fmt.Errorf("%w: want package agent_policy", ErrInvalidPolicy)
	}
	c := &compiled{module: mod}
	// Compile the whole package now: a broken policy is refused when set.
	if _, err := c.prepare(ctx, ""); err != nil {
		return err
	}
	e.cur.Store(c)
	return nil
}

func (c *compiled) prepare(ctx context.Context, rule string) (*rego.PreparedEvalQuery, error) {
	query := packagePath
	if rule != "" {
		query += "." + rule
	}
	if q, ok := c.rules.Load(query); ok {
		return q.(*rego.PreparedEvalQuery), nil
	}
	q, err := rego.New(rego.Query(query), rego.ParsedModule(c.module), rego.UnsafeBuiltins(unsafeBuiltins),
		rego.StrictBuiltinErrors(true)).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
	}
	c.rules.Store(query, &q)
	return &q, nil
}

// inputJSON names fields as the .proto does, as Kata's policy input does.
var inputJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// Check evaluates the rule named after req's message for method (a ttrpc
// method name, for the error message); nil means allowed.
func (e *Engine) Check(ctx context.Context, method string, req proto.Message) error {
	rule := string(req.ProtoReflect().Descriptor().Name())
	q, err := e.cur.Load().prepare(ctx, rule)
	if err != nil {
		return err
	}
	b, err := inputJSON.Marshal(req)
	if err != nil {
		return fmt.Errorf("%w: %s: encode the request: %v", ErrDenied, rule, err)
	}
	input, err := ast.ValueFromReader(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%w: %s: encode the request: %v", ErrDenied, rule, err)
	}
	rs, err := q.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil {
		return fmt.Errorf("%w: %s: evaluation failed: %v", ErrDenied, rule, err)
	}
	if !allowed(rs) {
		return fmt.Errorf("%w: %s (%s)", ErrDenied, rule, method)
	}
	return nil
}

// allowed reads a rule's result: true, or {"allowed": true, ...}.
func allowed(rs rego.ResultSet) bool {
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return false
	}
	switch v := rs[0].Expressions[0].Value.(type) {
	case bool:
		return v
	case map[string]any:
		ok, _ := v["allowed"].(bool)
		return ok
	}
	return false
}

// UnaryInterceptor checks every ttrpc request before its handler runs and
// answers PermissionDenied when the policy refuses it. Methods of services
// whose request type is not registered are refused too.
func (e *Engine) UnaryInterceptor() ttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
		req, err := requestFor(info.FullMethod)
		if err != nil {
			return nil, status.Error(codes.PermissionDenied, err.Error())
		}
		if err := unmarshal(req); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "decode %s: %v", info.FullMethod, err)
		}
		if err := e.Check(ctx, info.FullMethod, req); err != nil {
			if errors.Is(err, ErrDenied) {
				return nil, status.Error(codes.PermissionDenied, err.Error())
			}
			return nil, status.Error(codes.Internal, err.Error())
		}
		return method(ctx, func(v any) error {
			// The handler receives the request already decoded.
			proto.Merge(v.(proto.Message), req)
			return nil
		})
	}
}

// requestFor makes an empty request message for "/pkg.Service/Method".
func requestFor(fullMethod string) (proto.Message, error) {
	svc, name, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return nil, fmt.Errorf("%w: malformed method %q", ErrDenied, fullMethod)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, fmt.Errorf("%w: unknown service %s", ErrDenied, svc)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a service", ErrDenied, svc)
	}
	md := sd.Methods().ByName(protoreflect.Name(name))
	if md == nil {
		return nil, fmt.Errorf("%w: unknown method %s", ErrDenied, fullMethod)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDenied, fullMethod, err)
	}
	return mt.New().Interface(), nil
}
