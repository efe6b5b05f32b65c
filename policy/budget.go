package policy

import (
	"context"
	"fmt"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/topdown"
)

// Budget bounds one policy evaluation: OPA has no limits of its own, and
// a policy that iterates over numbers.range(1, 100000000) would run for
// minutes and take gigabytes.
type Budget struct {
	// Time is the wall time an evaluation may take.
	Time time.Duration
	// Memory is what the process may allocate while an evaluation runs.
	// Go cannot tell which goroutine allocated, so the allocations of
	// concurrent requests count too: keep it well above what the process
	// allocates in Time under load.
	Memory uint64
}

// Defaults of Budget.
const (
	DefaultEvalTime   = 2 * time.Second
	DefaultEvalMemory = 256 << 20
)

// DefaultBudget is the budget of an Engine until SetBudget.
var DefaultBudget = Budget{Time: DefaultEvalTime, Memory: DefaultEvalMemory}

// orDefault fills the zero fields of b with the defaults.
func (b Budget) orDefault() Budget {
	if b.Time <= 0 {
		b.Time = DefaultEvalTime
	}
	if b.Memory == 0 {
		b.Memory = DefaultEvalMemory
	}
	return b
}

// overrun is the error of an evaluation stopped for its budget; it is
// ErrBudget.
type overrun struct{ reason string }

func (o *overrun) Error() string        { return "over budget: " + o.reason }
func (o *overrun) Is(target error) bool { return target == ErrBudget }

// watchTick is how often the watchdog looks at the evaluations running.
const watchTick = 5 * time.Millisecond

// watch is one evaluation under its budget. OPA's evaluator checks cancel
// between steps and inside range-generating builtins.
type watch struct {
	ctx      context.Context
	cancel   topdown.Cancel
	deadline time.Time
	limit    uint64 // the allocation counter's value the evaluation may reach
	budget   Budget
	err      error // why it was cancelled; set under watchdog.mu
}

// watchdog cancels the evaluations that overrun their budget or whose
// context ends. One goroutine serves every engine, and runs only while
// evaluations do.
var dog = &watchdog{watches: map[*watch]struct{}{}}

type watchdog struct {
	mu      sync.Mutex
	watches map[*watch]struct{}
	running bool
	allocs  uint64 // the counter at the last tick
	sample  [1]metrics.Sample
}

// allocated reads the bytes the process has allocated so far; the caller
// holds d.mu.
func (d *watchdog) allocated() uint64 {
	d.sample[0].Name = "/gc/heap/allocs:bytes"
	metrics.Read(d.sample[:])
	return d.sample[0].Value.Uint64()
}

// start registers an evaluation; stop must follow.
func (d *watchdog) start(ctx context.Context, b Budget) *watch {
	w := &watch{ctx: ctx, cancel: topdown.NewCancel(), deadline: time.Now().Add(b.Time), budget: b}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.running {
		// The counter of the last tick is stale: read it now.
		d.allocs = d.allocated()
		d.running = true
		go d.run()
	}
	// Counting from the last tick charges the evaluation with up to one
	// tick of what came before it: a bound, not a measure.
	w.limit = d.allocs + b.Memory
	d.watches[w] = struct{}{}
	return w
}

// stop unregisters w and says why it was cancelled (nil if it was not).
func (d *watchdog) stop(w *watch) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.watches, w)
	return w.err
}

func (d *watchdog) run() {
	t := time.NewTicker(watchTick)
	defer t.Stop()
	for now := range t.C {
		if !d.tick(now) {
			return
		}
	}
}

// tick cancels the evaluations over budget; false when none is left.
func (d *watchdog) tick(now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.watches) == 0 {
		d.running = false
		return false
	}
	d.allocs = d.allocated()
	for w := range d.watches {
		if w.err != nil {
			continue
		}
		switch {
		case d.allocs > w.limit:
			w.err = &overrun{fmt.Sprintf("the process allocated over %d MiB while it ran", w.budget.Memory>>20)}
		case now.After(w.deadline):
			w.err = &overrun{fmt.Sprintf("it ran over %v", w.budget.Time)}
		case w.ctx.Err() != nil:
			w.err = w.ctx.Err()
		default:
			continue
		}
		w.cancel.Cancel()
	}
	return true
}
