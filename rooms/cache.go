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

// eventCache keeps the most recently used parsed events by numeric ID.
type eventCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front = most recent; values are *Event
	byNID map[int64]*list.Element
}

func newEventCache(max int) eventCache {
	return eventCache{max: max, order: list.New(), byNID: map[int64]*list.Element{}}
}

func (c *eventCache) get(nid int64) *Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byNID[nid]
	if !ok {
		return nil
	}
	c.order.MoveToFront(el)
	return el.Value.(*Event)
}

func (c *eventCache) put(e *Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byNID[e.NID]; ok {
		el.Value = e
		c.order.MoveToFront(el)
		return
	}
	c.byNID[e.NID] = c.order.PushFront(e)
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byNID, last.Value.(*Event).NID)
	}
}

// forget drops an event (after it was redacted, say) so that the next read sees the change.
func (c *eventCache) forget(nid int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byNID[nid]; ok {
		c.order.Remove(el)
		delete(c.byNID, nid)
	}
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
