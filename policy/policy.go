// Package policy stores Rego policies and evaluates them with OPA. The KBS
// uses it for its resource policy and the attestation service for its
// attestation policies; both follow Trustee: `package policy`, Rego v1 or
// v0 syntax, one document per policy id.
package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/cocoon-cc/cocoon/store"
)

// Errors of the policy engine.
var (
	ErrNotFound = errors.New("policy not found")
	ErrInvalid  = errors.New("invalid policy")
	ErrEval     = errors.New("policy evaluation failed")
	// ErrBudget: an evaluation overran its Budget and was stopped.
	ErrBudget = errors.New("policy evaluation over budget")
)

// MaxSize bounds a policy's text.
const MaxSize = 1 << 20

// noNetwork are builtins a policy may not call: an appraisal must depend on
// the evidence and the stored reference values only.
var noNetwork = map[string]struct{}{"http.send": {}, "net.lookup_ip_addr": {}, "opa.runtime": {}}

// Engine keeps policies in a store namespace and caches them compiled.
type Engine struct {
	store store.Store
	ns    string
	opts  []func(*rego.Rego)

	mu       sync.RWMutex
	compiled map[string]*compiled
	// With a store other processes write (store.Versioner): the
	// namespaces followed besides ns, what to call when one moves, the
	// counters last seen (ns first), and the epoch, which moves whenever
	// compiled is dropped; stale keeps the dropped policies, reused when
	// their text turns out unchanged.
	follows  []string
	onChange []func()
	seen     []uint64
	epoch    uint64
	stale    map[string]*compiled
	unshared atomic.Bool
	// Decision caching (CacheDecisions): nil version means off.
	version func() uint64
	tracked map[string]bool
	budget  Budget
	// The input and data a policy is tried on when it is set.
	sampleInput, sampleData map[string]any
}

type compiled struct {
	text    string
	module  *ast.Module
	paths   [][]string // the input paths it reads, when its decisions are cached
	cached  bool
	mu      sync.Mutex // guards queries
	queries map[string]*prepared
}

type prepared struct {
	query     rego.PreparedEvalQuery
	data      storage.Store
	decisions *decisions // nil when not cached
}

// New returns an Engine over namespace ns of s; opts (custom builtins) are
// added to every query.
func New(s store.Store, ns string, opts ...func(*rego.Rego)) *Engine {
	return &Engine{store: s, ns: ns, opts: opts, compiled: map[string]*compiled{}, stale: map[string]*compiled{}, budget: DefaultBudget}
}

// Follow names another namespace the engine's decisions depend on (the
// reference values of attestation policies): with a store other processes
// write, every evaluation reads its version counter along with the
// policies' and calls changed when it moved, before deciding.
func (e *Engine) Follow(ns string, changed func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.follows = append(e.follows, ns)
	e.onChange = append(e.onChange, changed)
	e.seen = nil
}

// sync makes the engine current with a store that other processes (KBS
// replicas) write: it reads the version counters of its namespace and of
// those it follows (in one round trip at most), and drops what it cached of
// any that moved. A replica thus never decides on a policy replaced elsewhere: the
// read happens after every write acknowledged before the request came.
func (e *Engine) sync(ctx context.Context) error {
	if e.unshared.Load() {
		return nil
	}
	e.mu.RLock()
	ns := append([]string{e.ns}, e.follows...)
	e.mu.RUnlock()
	vs, err := store.Versions(ctx, e.store, ns...)
	if errors.Is(err, store.ErrUnversioned) {
		// This process is the store's only writer.
		e.unshared.Store(true)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: policy versions: %w", ErrEval, err)
	}
	var changed []func()
	e.mu.Lock()
	if len(e.seen) != len(vs) {
		e.seen = make([]uint64, len(vs))
	}
	for i, v := range vs {
		if v <= e.seen[i] {
			continue // counters only grow: an older read says nothing new
		}
		e.seen[i] = v
		if i > 0 {
			changed = append(changed, e.onChange[i-1])
			continue
		}
		for id, c := range e.compiled {
			e.stale[id] = c
		}
		e.compiled = map[string]*compiled{}
		e.epoch++
	}
	e.mu.Unlock()
	for _, f := range changed {
		f()
	}
	return nil
}

// SetBudget bounds every evaluation from now on; zero fields keep their
// defaults.
func (e *Engine) SetBudget(b Budget) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.budget = b.orDefault()
}

// SetSample names the input and data (nil: none) that Set tries a policy
// on: one that overruns the budget on them is refused.
func (e *Engine) SetSample(input, data map[string]any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sampleInput, e.sampleData = input, data
}

func (e *Engine) currentBudget() Budget {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.budget
}

// Parse checks that text is a Rego module of package policy, trying Rego v1
// syntax first and v0 (Trustee's older policies) second.
func Parse(id, text string) (*ast.Module, error) {
	if len(text) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalid, len(text), MaxSize)
	}
	mod, err := ast.ParseModuleWithOpts(id+".rego", text, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		var err0 error
		if mod, err0 = ast.ParseModuleWithOpts(id+".rego", text, ast.ParserOptions{RegoVersion: ast.RegoV0}); err0 != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalid, regoError(err))
		}
	}
	if mod == nil {
		return nil, fmt.Errorf("%w: empty module", ErrInvalid)
	}
	if got := mod.Package.Path.String(); got != "data.policy" {
		return nil, fmt.Errorf("%w: package is %s, want policy", ErrInvalid, got)
	}
	return mod, nil
}

// regoError is OPA's parse or compile error on one line: each error's
// location, code and message, without the source excerpt OPA adds below.
func regoError(err error) string {
	var errs ast.Errors
	if !errors.As(err, &errs) {
		return err.Error()
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		short := *e
		short.Details = nil
		msgs[i] = short.Error()
	}
	return strings.Join(msgs, "; ")
}

// Set validates, compiles and stores a policy, replacing any other of that
// id. A policy whose every rule (the whole package) overruns the budget on
// the sample input is invalid.
func (e *Engine) Set(ctx context.Context, id, text string) error {
	c, err := e.compile(ctx, id, text)
	if err != nil {
		return err
	}
	if err := e.tryOut(ctx, c); err != nil {
		return err
	}
	if err := e.store.Put(ctx, e.ns, id, []byte(text)); err != nil {
		return fmt.Errorf("policy: store %s: %w", id, err)
	}
	e.mu.Lock()
	e.compiled[id] = c
	e.mu.Unlock()
	return nil
}

// SetDefault stores text as policy id unless one is stored already.
func (e *Engine) SetDefault(ctx context.Context, id, text string) error {
	if _, err := e.store.Get(ctx, e.ns, id); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return e.Set(ctx, id, text)
}

// Get returns a policy's text.
func (e *Engine) Get(ctx context.Context, id string) (string, error) {
	v, err := e.store.Get(ctx, e.ns, id)
	if errors.Is(err, store.ErrNotFound) {
		return "", fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return string(v), err
}

// List returns the stored policy ids.
func (e *Engine) List(ctx context.Context) ([]string, error) { return e.store.List(ctx, e.ns) }

// tryOut evaluates all of c's package on the sample input; only an
// overrun refuses it (a policy may well fail on an input it does not
// expect).
func (e *Engine) tryOut(ctx context.Context, c *compiled) error {
	p, err := c.prepare(ctx, "data.policy", e.opts)
	if err != nil {
		return err
	}
	e.mu.RLock()
	input, data, b := e.sampleInput, e.sampleData, e.budget
	e.mu.RUnlock()
	if input == nil {
		input = map[string]any{}
	}
	var over *overrun
	if _, err := p.eval(ctx, input, data, b); errors.As(err, &over) {
		return fmt.Errorf("%w: %w (tried on a sample input)", ErrInvalid, over)
	}
	return nil
}

// compile parses text and checks it compiles; the queries themselves are
// prepared on first use.
func (e *Engine) compile(ctx context.Context, id, text string) (*compiled, error) {
	mod, err := Parse(id, text)
	if err != nil {
		return nil, err
	}
	c := &compiled{text: text, module: mod, queries: map[string]*prepared{}}
	e.mu.RLock()
	if e.version != nil {
		c.paths, c.cached = inputPaths(mod, e.tracked)
	}
	e.mu.RUnlock()
	// Preparing a query compiles the module: do it now so a bad policy is
	// refused when it is set, not when it is first used.
	if _, err := c.prepare(ctx, "data.policy", e.opts); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *compiled) prepare(ctx context.Context, query string, opts []func(*rego.Rego)) (*prepared, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.queries[query]; ok {
		return p, nil
	}
	// Per-request data is written as is (no JSON round trip: callers pass
	// plain JSON values) and read back as AST values, the evaluator's own.
	data := inmem.NewWithOpts(inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	args := append([]func(*rego.Rego){
		rego.Query(query),
		rego.ParsedModule(c.module),
		rego.Store(data),
		rego.UnsafeBuiltins(noNetwork),
		rego.StrictBuiltinErrors(true),
	}, opts...)
	q, err := rego.New(args...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, regoError(err))
	}
	p := &prepared{query: q, data: data}
	if c.cached {
		p.decisions = newDecisions(c.paths)
	}
	c.queries[query] = p
	return p, nil
}

// absent marks a policy id known not to exist (cached like a policy, so
// optional policies cost no store read when there are none).
var absent = &compiled{}

// load returns the compiled policy id, compiling the stored text on first
// use (after a restart, or after another process changed the policies).
func (e *Engine) load(ctx context.Context, id string) (*compiled, error) {
	e.mu.RLock()
	c, ok := e.compiled[id]
	old, epoch := e.stale[id], e.epoch
	e.mu.RUnlock()
	if c == absent {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if ok {
		return c, nil
	}
	text, err := e.Get(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		c = absent
	case err != nil:
		return nil, err
	case old != nil && old.text == text:
		c = old // unchanged: keep its compiled queries and decisions
	default:
		if c, err = e.compile(ctx, id, text); err != nil {
			return nil, err
		}
	}
	e.mu.Lock()
	// A text read before the policies were dropped may be stale: use it
	// for this call only.
	if e.epoch == epoch {
		e.compiled[id] = c
		delete(e.stale, id)
	}
	e.mu.Unlock()
	if c == absent {
		return nil, err
	}
	return c, nil
}

// Eval evaluates query (e.g. "data.policy.allow") of policy id with input
// and, when data is not nil, that document as `data` beside the policy. The
// result is nil when the query is undefined; it may be a cached decision,
// shared with other callers, who must not modify it.
func (e *Engine) Eval(ctx context.Context, id, query string, input, data map[string]any) (any, error) {
	if err := e.sync(ctx); err != nil {
		return nil, err
	}
	return e.eval(ctx, id, query, input, data)
}

// EvalEach evaluates query with each policy of ids in turn, as Eval does,
// after one read of the store's versions, and hands each result to each;
// a policy that does not exist is skipped. An error of each stops it.
func (e *Engine) EvalEach(ctx context.Context, ids []string, query string, input, data map[string]any, each func(id string, out any) error) error {
	if err := e.sync(ctx); err != nil {
		return err
	}
	for _, id := range ids {
		out, err := e.eval(ctx, id, query, input, data)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err == nil {
			err = each(id, out)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) eval(ctx context.Context, id, query string, input, data map[string]any) (any, error) {
	c, err := e.load(ctx, id)
	if err != nil {
		return nil, err
	}
	p, err := c.prepare(ctx, query, e.opts)
	if err != nil {
		return nil, err
	}
	b := e.currentBudget()
	if p.decisions == nil {
		return p.eval(ctx, input, data, b)
	}
	k, ok := p.decisions.key(input, data)
	if !ok {
		return p.eval(ctx, input, data, b)
	}
	version := e.version()
	if out, ok := p.decisions.get(k, version); ok {
		return out, nil
	}
	out, err := p.eval(ctx, input, data, b)
	if err == nil {
		p.decisions.put(k, version, out)
	}
	return out, err
}

// eval runs the query over input and data within budget b.
func (p *prepared) eval(ctx context.Context, input, data map[string]any, b Budget) (any, error) {
	w := dog.start(ctx, b)
	out, err := p.evalCancel(ctx, input, data, w.cancel)
	if over := dog.stop(w); over != nil {
		return nil, fmt.Errorf("%w: %w", ErrEval, over)
	}
	return out, err
}

// evalCancel runs the query; cancel stops it.
func (p *prepared) evalCancel(ctx context.Context, input, data map[string]any, cancel topdown.Cancel) (any, error) {
	// rego.EvalInput would round-trip the input through JSON, then convert
	// all of it; a lazy object converts what the policy reads (a token's
	// claims are large, a policy reads a few).
	opts := []rego.EvalOption{rego.EvalParsedInput(ast.LazyObject(input)), rego.EvalExternalCancel(cancel)}
	if data != nil {
		// Per-request data is written in a transaction that is never
		// committed, so concurrent evaluations never see each other's data.
		txn, err := p.data.NewTransaction(ctx, storage.WriteParams)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrEval, err)
		}
		defer p.data.Abort(ctx, txn)
		for k, v := range data {
			if err := p.data.Write(ctx, txn, storage.AddOp, storage.Path{k}, v); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrEval, err)
			}
		}
		opts = append(opts, rego.EvalTransaction(txn))
	}
	rs, err := p.query.Eval(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEval, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, nil
	}
	return rs[0].Expressions[0].Value, nil
}
