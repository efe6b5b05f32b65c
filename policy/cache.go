package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// maxDecisions bounds a prepared query's decision cache.
const maxDecisions = 4096

// CacheDecisions makes Eval remember the decisions of policies whose result
// depends on nothing but the parts of the input they read, the per-request
// data and, for the custom builtins named, the state version names: a
// policy that calls another nondeterministic builtin (time.now_ns,
// http.send, ...), imports anything or uses the input other than through
// fixed paths is always evaluated. version (nil: none) must change
// whenever what those builtins answer may have changed, expiries included.
// Guests of one image on one platform present the same claims, so most
// appraisals are answered without running OPA.
func (e *Engine) CacheDecisions(version func() uint64, builtins ...string) {
	if version == nil {
		version = func() uint64 { return 0 }
	}
	tracked := map[string]bool{}
	for _, b := range builtins {
		tracked[b] = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.version, e.tracked = version, tracked
	e.compiled = map[string]*compiled{} // analysed again when next loaded
	e.stale = map[string]*compiled{}
}

// inputPaths is the fixed paths into the input that mod reads, or ok false
// when its decisions cannot be cached. A path covers everything below it;
// a read through a variable key covers the path up to that key.
func inputPaths(mod *ast.Module, tracked map[string]bool) (paths [][]string, ok bool) {
	for _, imp := range mod.Imports {
		if p := imp.Path.String(); p != "rego.v1" && !strings.HasPrefix(p, "future.keywords") {
			return nil, false
		}
	}
	rules := map[string]bool{}
	for _, r := range mod.Rules {
		rules[r.Head.Name.String()] = true
		rules[r.Head.Ref().String()] = true
	}
	ok = true
	var visit func(x any) bool
	visit = func(x any) bool {
		switch x := x.(type) {
		case *ast.Expr:
			if x.IsCall() && !deterministic(x.Operator().String(), rules, tracked) {
				ok = false
			}
		case *ast.Term:
			switch v := x.Value.(type) {
			case ast.Var:
				if v.Equal(ast.InputRootDocument.Value) {
					paths = append(paths, nil)
				}
			case ast.Ref:
				if !v[0].Equal(ast.InputRootDocument) {
					return false
				}
				var p []string
				for _, t := range v[1:] {
					s, isString := t.Value.(ast.String)
					if !isString {
						break
					}
					p = append(p, string(s))
				}
				paths = append(paths, p)
				// Keys after the fixed path may read the input too.
				for _, t := range v[1:] {
					ast.NewGenericVisitor(visit).Walk(t)
				}
				return true
			case ast.Call:
				if !deterministic(v[0].String(), rules, tracked) {
					ok = false
				}
			}
		}
		return !ok
	}
	ast.NewGenericVisitor(visit).Walk(mod)
	return paths, ok
}

// clockReaders are builtins that read the clock though OPA does not mark
// them nondeterministic (tokens' and certificates' validity).
var clockReaders = map[string]bool{
	"io.jwt.decode_verify":                                   true,
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
}

// deterministic says whether a call's result depends on its arguments
// alone (or, for tracked builtins, on the version too).
func deterministic(name string, rules, tracked map[string]bool) bool {
	if rules[name] || tracked[name] {
		return true
	}
	if strings.HasPrefix(name, "data.") {
		return true // the policy's own functions: their bodies are checked
	}
	b, ok := ast.BuiltinMap[name]
	return ok && !b.Nondeterministic && !clockReaders[name]
}

// decisions is one prepared query's cache: decision key -> result.
type decisions struct {
	paths [][]string
	mu    sync.RWMutex
	byKey map[[sha256.Size]byte]decision
}

type decision struct {
	version uint64
	value   any
}

func newDecisions(paths [][]string) *decisions {
	return &decisions{paths: distinctPaths(paths), byKey: map[[sha256.Size]byte]decision{}}
}

// distinctPaths drops repeated paths and those below another one (whose
// value the key holds already): a policy names the same input fields in
// many rules, and the key was hashing each of them once per mention.
func distinctPaths(paths [][]string) [][]string {
	sorted := slices.SortedFunc(slices.Values(paths), slices.Compare[[]string])
	var out [][]string
	for _, p := range sorted {
		// Sorted, a path follows its prefixes: only the last kept one
		// can be one of them.
		if n := len(out); n > 0 && len(out[n-1]) <= len(p) && slices.Equal(out[n-1], p[:len(out[n-1])]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// key names a decision of the query: the request's data and the input at
// the policy's paths. Equal keys mean inputs the policy cannot tell apart.
// ok is false for a value that cannot be encoded. The encoding is built in
// one buffer and hashed once: a hash call per value cost more than the
// hashing.
func (d *decisions) key(input, data map[string]any) (k [sha256.Size]byte, ok bool) {
	b, ok := appendValue(make([]byte, 0, 1024), data)
	for _, p := range d.paths {
		depth, v, found := lookup(input, p)
		b = binary.AppendUvarint(b, uint64(depth))
		if !found {
			b = append(b, '-')
			continue
		}
		if ok {
			b, ok = appendValue(b, v)
		}
	}
	return sha256.Sum256(b), ok
}

// lookup follows path through nested objects: the value at the end, or at
// the depth where a value that is not a map[string]any (which the policy
// sees as the JSON it encodes to) stops the walk; found is false when an
// object lacks the next name.
func lookup(input map[string]any, path []string) (depth int, v any, found bool) {
	v = input
	for i, name := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return i, v, true
		}
		if v, ok = m[name]; !ok {
			return i, nil, false
		}
	}
	return len(path), v, true
}

// appendValue appends an unambiguous encoding of v: values OPA tells apart
// never encode the same (length-prefixed raw strings, not JSON text, which
// would merge invalid UTF-8). Values of other types are their JSON, which
// is all OPA sees of them too.
func appendValue(b []byte, v any) (_ []byte, ok bool) {
	tagged := func(tag byte, n uint64) { b = binary.AppendUvarint(append(b, tag), n) }
	stringOf := func(tag byte, s string) {
		tagged(tag, uint64(len(s)))
		b = append(b, s...)
	}
	switch v := v.(type) {
	case ast.Value:
		return b, false // never in inputs built from JSON or Go values
	case nil:
		tagged('n', 0)
	case bool:
		if v {
			tagged('t', 0)
		} else {
			tagged('f', 0)
		}
	case string:
		stringOf('s', v)
	case json.Number:
		stringOf('N', string(v))
	case json.RawMessage:
		stringOf('R', string(v))
	case float64:
		tagged('F', math.Float64bits(v))
	case int:
		tagged('I', uint64(v))
	case int64:
		tagged('L', uint64(v))
	case []string:
		tagged('S', uint64(len(v)))
		for _, s := range v {
			stringOf('s', s)
		}
	case []any:
		tagged('A', uint64(len(v)))
		for _, e := range v {
			if b, ok = appendValue(b, e); !ok {
				return b, false
			}
		}
	case map[string]any:
		tagged('M', uint64(len(v)))
		for _, k := range slices.Sorted(maps.Keys(v)) {
			stringOf('s', k)
			if b, ok = appendValue(b, v[k]); !ok {
				return b, false
			}
		}
	default:
		j, err := json.Marshal(v)
		if err != nil {
			return b, false
		}
		stringOf('J', string(j))
	}
	return b, true
}

func (d *decisions) get(k [sha256.Size]byte, version uint64) (any, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	e, ok := d.byKey[k]
	if !ok || e.version != version {
		return nil, false
	}
	return e.value, true
}

func (d *decisions) put(k [sha256.Size]byte, version uint64, v any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.byKey) >= maxDecisions {
		clear(d.byKey)
	}
	d.byKey[k] = decision{version: version, value: v}
}
