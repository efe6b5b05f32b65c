package k8stest

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
)

// owner is the testing.TB the cluster's parts are started with. The
// cluster outlives the test that starts it: failures while starting are
// that test's, but cleanups and temporary directories are the cluster's,
// run and removed by Main when the test binary ends.
type owner struct {
	testing.TB // the starting test; nil once it is done

	mu       sync.Mutex
	cleanups []func()
	root     string // parent of TempDir's directories
	failed   bool   // a teardown error
	skipped  string // why the cluster could not start, if it was skipped
}

func (o *owner) Cleanup(f func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cleanups = append(o.cleanups, f)
}

func (o *owner) TempDir() string {
	d, err := os.MkdirTemp(o.root, "t")
	if err != nil {
		o.Fatal(err)
	}
	return d
}

func (o *owner) Helper() {
	if o.TB != nil {
		o.TB.Helper()
	}
}

func (o *owner) Skip(args ...any) {
	o.skipped = fmt.Sprint(args...)
	o.TB.Skip(args...)
}

func (o *owner) Skipf(format string, args ...any) {
	o.skipped = fmt.Sprintf(format, args...)
	o.TB.Skip(o.skipped)
}

// The reporting methods below serve the cleanups, which run after every
// test has ended: they write to stderr and fail the test binary.

func (o *owner) Errorf(format string, args ...any) {
	if o.TB != nil {
		o.TB.Errorf(format, args...)
		return
	}
	o.failed = true
	fmt.Fprintf(os.Stderr, "k8stest teardown: "+format+"\n", args...)
}

func (o *owner) Error(args ...any) { o.Errorf("%s", fmt.Sprint(args...)) }

func (o *owner) Fatalf(format string, args ...any) {
	if o.TB != nil {
		o.TB.Fatalf(format, args...)
	}
	o.Errorf(format, args...)
	runtime.Goexit()
}

func (o *owner) Fatal(args ...any) { o.Fatalf("%s", fmt.Sprint(args...)) }

func (o *owner) Logf(format string, args ...any) {
	if o.TB != nil {
		o.TB.Logf(format, args...)
		return
	}
	fmt.Fprintf(os.Stderr, "k8stest teardown: "+format+"\n", args...)
}

func (o *owner) Log(args ...any) { o.Logf("%s", fmt.Sprint(args...)) }

func (o *owner) Failed() bool {
	if o.TB != nil {
		return o.TB.Failed()
	}
	return o.failed
}

// runCleanups runs the cleanups, last first, each in its own goroutine so
// that a Fatal (runtime.Goexit) ends only that cleanup.
func (o *owner) runCleanups() {
	o.mu.Lock()
	fs := o.cleanups
	o.cleanups = nil
	o.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		done := make(chan struct{})
		go func() {
			defer close(done)
			fs[i]()
		}()
		<-done
	}
}
