package ship

import (
	"context"
	"sync"
)

// buffer is the bounded in-memory queue between the producers (the
// agent, the loopback receiver) and the exporter. Its bound counts the
// batches being exported too, so memory stays within it while the
// endpoint is unreachable. It never touches a disk: the host would see it.
type buffer struct {
	mu    sync.Mutex
	q     []entry
	bytes int // queued and in flight
	max   int
	wake  chan struct{}
}

type entry struct {
	b    batch
	size int
}

func newBuffer(max int) *buffer { return &buffer{max: max, wake: make(chan struct{}, 1)} }

// push queues b, of n bytes, unless that would pass the bound.
func (q *buffer) push(b batch, n int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.bytes+n > q.max {
		return false
	}
	q.bytes += n
	q.q = append(q.q, entry{b, n})
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// take waits for data and returns the oldest batch merged with the ones
// of the same signal queued right after it, up to limit bytes; its bytes
// stay counted until release.
func (q *buffer) take(ctx context.Context, limit int) (batch, int, error) {
	for {
		q.mu.Lock()
		if len(q.q) > 0 {
			head, n := q.q[0].b, q.q[0].size
			i := 1
			for ; i < len(q.q) && q.q[i].b.signal() == head.signal() && n+q.q[i].size <= limit; i++ {
				head.absorb(q.q[i].b)
				n += q.q[i].size
			}
			q.q = q.q[i:]
			q.mu.Unlock()
			return head, n, nil
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

// release frees the bytes of a taken batch once it was exported or
// dropped.
func (q *buffer) release(n int) {
	q.mu.Lock()
	q.bytes -= n
	q.mu.Unlock()
}

// used is the bytes queued and in flight.
func (q *buffer) used() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}
