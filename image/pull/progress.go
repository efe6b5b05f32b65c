package pull

import (
	"io"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Progress is the state of one pull, reported while it runs.
type Progress struct {
	Layers     int   // layers in the image
	LayersDone int   // layers fetched, verified and unpacked
	Total      int64 // bytes of all layer blobs, as the manifest states them
	Done       int64 // layer blob bytes read so far
	Elapsed    time.Duration
	Finished   bool // the last report of a successful pull
}

// progressInterval bounds how often a running layer is reported.
const progressInterval = 200 * time.Millisecond

// reporter counts a pull's layer bytes for Options.Progress, from the
// layers extracted at the same time. A nil reporter (no Progress set)
// costs nothing on the read path.
type reporter struct {
	mu    sync.Mutex
	fn    func(Progress)
	p     Progress
	start time.Time
	last  time.Time
}

func newReporter(fn func(Progress), m *ocispec.Manifest) *reporter {
	if fn == nil {
		return nil
	}
	r := &reporter{fn: fn, start: time.Now()}
	r.p.Layers = len(m.Layers)
	for _, l := range m.Layers {
		r.p.Total += l.Size
	}
	r.report()
	return r
}

func (r *reporter) report() {
	r.last = time.Now()
	r.p.Elapsed = r.last.Sub(r.start)
	r.fn(r.p)
}

// meter counts what is read through it.
func (r *reporter) meter(rd io.Reader) io.Reader {
	if r == nil {
		return rd
	}
	return &meteredReader{r: rd, rep: r}
}

func (r *reporter) layerDone() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p.LayersDone++
	r.report()
}

func (r *reporter) finished() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p.Finished = true
	r.report()
}

type meteredReader struct {
	r   io.Reader
	rep *reporter
}

func (m *meteredReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	r := m.rep
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p.Done += int64(n)
	if time.Since(r.last) >= progressInterval {
		r.report()
	}
	return n, err
}
