package csv

import "sync"

// bounded is a concurrent map that forgets everything when it is full:
// entries are cheap to recompute, and a bound keeps evidence with ever new
// chips or chains from growing it without end.
type bounded[K comparable, V any] struct {
	mu  sync.Mutex
	m   map[K]V
	max int
}

func newBounded[K comparable, V any](max int) *bounded[K, V] {
	return &bounded[K, V]{m: map[K]V{}, max: max}
}

func (b *bounded[K, V]) get(k K) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[k]
	return v, ok
}

func (b *bounded[K, V]) put(k K, v V) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.m) >= b.max {
		clear(b.m)
	}
	b.m[k] = v
}
