package rooms

import (
	"container/list"
	"sync"

	"github.com/scrambledeggs/eggs/spec"
)

// tupleCache interns state tuples to numeric IDs and back. Tuples are few (one per piece of
// state ever set) and never change, so it keeps them all.
type tupleCache struct {
	mu    sync.RWMutex
	byKey map[spec.StateTuple]int64
	byNID map[int64]spec.StateTuple
}

func newTupleCache() tupleCache {
	return tupleCache{byKey: map[spec.StateTuple]int64{}, byNID: map[int64]spec.StateTuple{}}
}

func (c *tupleCache) nid(t spec.StateTuple) (int64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	nid, ok := c.byKey[t]
	return nid, ok
}

func (c *tupleCache) add(t spec.StateTuple, nid int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byKey[t] = nid
	c.byNID[nid] = t
}

// lru is a small least-recently-used cache.
type lru[K comparable, V any] struct {
	mu    sync.Mutex
	max   int
	order *list.List // front = most recent; values are lruEntry
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key   K
	value V
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, order: list.New(), items: map[K]*list.Element{}}
}

func (c *lru[K, V]) get(key K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.MoveToFront(el)
		return el.Value.(lruEntry[K, V]).value, true
	}
	var zero V
	return zero, false
}

func (c *lru[K, V]) put(key K, value V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value = lruEntry[K, V]{key, value}
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(lruEntry[K, V]{key, value})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(lruEntry[K, V]).key)
	}
}

// clear empties the cache.
func (c *lru[K, V]) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.order.Init()
	clear(c.items)
}

// forget drops one entry.
func (c *lru[K, V]) forget(key K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.Remove(el)
		delete(c.items, key)
	}
}
