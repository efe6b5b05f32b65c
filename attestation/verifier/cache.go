package verifier

import "sync"

// Cache is a bounded, concurrency-safe map for what a verifier can rebuild:
// verified certificate chains, fetched endorsements. When full it drops an
// arbitrary entry, so evidence with ever new certificates cannot grow
// memory without limit.
type Cache[K comparable, V any] struct {
	mu  sync.RWMutex
	m   map[K]V
	max int
}

// NewCache returns a cache of at most max entries.
func NewCache[K comparable, V any](max int) *Cache[K, V] {
	return &Cache[K, V]{m: map[K]V{}, max: max}
}

// Get returns the value cached for k.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := c.m[k]
	return v, ok
}

// Put caches v for k.
func (c *Cache[K, V]) Put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = v
}
