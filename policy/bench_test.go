package policy_test

import (
	"context"
	"testing"

	"github.com/cocoon-cc/cocoon/policy"
	"github.com/cocoon-cc/cocoon/store/memory"
)

// BenchmarkEval is one uncached evaluation of a small policy, from as many
// goroutines as a busy KBS has: the cost every appraisal and resource
// decision pays, the evaluation budget's watchdog included.
func BenchmarkEval(b *testing.B) {
	ctx := context.Background()
	e := policy.New(memory.New(), "p")
	if err := e.Set(ctx, "p", v1Allow); err != nil {
		b.Fatal(err)
	}
	input := map[string]any{"user": "alice"}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if out, err := e.Eval(ctx, "p", "data.policy.allow", input, nil); err != nil || out != true {
				b.Fatal(out, err)
			}
		}
	})
}
