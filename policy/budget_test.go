package policy_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/policy"
	"github.com/cocoon-cc/cocoon/store"
	"github.com/cocoon-cc/cocoon/store/memory"
)

// The policies of issue 14: one that builds a range of 100 million
// numbers (memory), one that iterates over 400^3 without keeping much
// (time).
const (
	hugeRange = `package policy
import rego.v1
allow if count([x | some x in numbers.range(1, 100000000)]) > 0
`
	longLoop = `package policy
import rego.v1
allow if {
	every a in numbers.range(1, 400) {
		every b in numbers.range(1, 400) {
			every c in numbers.range(1, 400) { a + b + c > 0 }
		}
	}
}
`
	// guarded overruns only on inputs that ask for it, so it passes the
	// check at upload.
	guarded = `package policy
import rego.v1
default allow := false
allow if {
	input.deep == true
	count([x | some x in numbers.range(1, 100000000)]) > 0
}
allow if input.user == "alice"
`
)

func TestBudgetRefusesAtUpload(t *testing.T) {
	ctx := context.Background()
	for name, c := range map[string]struct {
		text   string
		budget policy.Budget
	}{
		"memory": {hugeRange, policy.Budget{Time: time.Hour, Memory: 16 << 20}},
		"time":   {longLoop, policy.Budget{Time: 50 * time.Millisecond, Memory: 1 << 40}},
	} {
		t.Run(name, func(t *testing.T) {
			st := memory.New()
			e := policy.New(st, "p")
			e.SetBudget(c.budget)
			err := e.Set(ctx, "p", c.text)
			if !errors.Is(err, policy.ErrInvalid) || !errors.Is(err, policy.ErrBudget) {
				t.Fatalf("Set: %v", err)
			}
			t.Log(err)
			if _, err := st.Get(ctx, "p", "p"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the refused policy was stored: %v", err)
			}
		})
	}
}

func TestBudgetStopsEvaluation(t *testing.T) {
	ctx := context.Background()
	e := policy.New(memory.New(), "p")
	e.CacheDecisions(nil)
	e.SetBudget(policy.Budget{Memory: 16 << 20})
	if err := e.Set(ctx, "p", guarded); err != nil {
		t.Fatal(err)
	}
	for range 2 { // an overrun is never a cached decision
		if _, err := e.Eval(ctx, "p", "data.policy.allow", map[string]any{"deep": true}, nil); !errors.Is(err, policy.ErrBudget) || !errors.Is(err, policy.ErrEval) {
			t.Fatalf("deep input: %v", err)
		}
	}
	if out, err := e.Eval(ctx, "p", "data.policy.allow", map[string]any{"user": "alice"}, nil); err != nil || out != true {
		t.Errorf("alice after an overrun: %v, %v", out, err)
	}
	// The caller's context ends an evaluation too, and it is no overrun.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.Eval(cctx, "p", "data.policy.allow", map[string]any{"deep": true}, nil); !errors.Is(err, context.Canceled) || errors.Is(err, policy.ErrBudget) {
		t.Errorf("cancelled context: %v", err)
	}
}

// TestBudgetSample: the sample input set for an engine is what a policy is
// tried on, so a policy that overruns on it is refused.
func TestBudgetSample(t *testing.T) {
	ctx := context.Background()
	e := policy.New(memory.New(), "p")
	e.SetBudget(policy.Budget{Memory: 16 << 20})
	e.SetSample(map[string]any{"deep": true}, nil)
	if err := e.Set(ctx, "p", guarded); !errors.Is(err, policy.ErrBudget) {
		t.Fatalf("Set: %v", err)
	}
	if err := e.Set(ctx, "p", v1Allow); err != nil {
		t.Errorf("a cheap policy: %v", err)
	}
}
