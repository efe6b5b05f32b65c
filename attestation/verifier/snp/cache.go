package snp

import "sync"

// maxCached bounds each cache. A fleet has a VCEK per chip and TCB, so the
// bound is generous; it only stops evidence with ever new certificates from
// growing memory without limit.
const maxCached = 4096

// cache is a bounded, concurrency-safe map keyed by bytes (DER or a path).
// When full it drops an arbitrary entry: every entry can be rebuilt.
type cache[V any] struct {
	mu sync.RWMutex
	m  map[string]V
}

func newCache[V any]() *cache[V] { return &cache[V]{m: map[string]V{}} }

func (c *cache[V]) get(key []byte) (V, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := c.m[string(key)]
	return v, ok
}

func (c *cache[V]) put(key []byte, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[string(key)]; !ok && len(c.m) >= maxCached {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[string(key)] = v
}
