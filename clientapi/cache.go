package clientapi

import "sync"

// boundedMap is a map safe for concurrent use that starts over once it holds max entries.
// The API's caches keep only what is cheap to compute again, so forgetting all at once is
// simpler than an eviction order and keeps memory bounded.
type boundedMap[K comparable, V any] struct {
	mu  sync.Mutex
	max int
	m   map[K]V
}

func newBoundedMap[K comparable, V any](max int) *boundedMap[K, V] {
	return &boundedMap[K, V]{max: max, m: map[K]V{}}
}

func (b *boundedMap[K, V]) get(key K) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[key]
	return v, ok
}

func (b *boundedMap[K, V]) put(key K, value V) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.m) >= b.max {
		clear(b.m)
	}
	b.m[key] = value
}
