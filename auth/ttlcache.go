package auth

import (
	"container/list"
	"time"
)

// ttlCache maps string keys to values that expire a fixed time after they were added, and
// holds at most max of them, forgetting the oldest first. Because every entry lives for
// the same ttl, insertion order is also expiry order, so expiring and evicting are O(1)
// per entry. It is not safe for concurrent use; its owner locks around it.
type ttlCache[V any] struct {
	ttl     time.Duration
	max     int
	order   *list.List // of *ttlEntry[V], oldest first
	entries map[string]*list.Element
}

type ttlEntry[V any] struct {
	key     string
	expires time.Time
	value   V
}

func newTTLCache[V any](ttl time.Duration, maxEntries int) *ttlCache[V] {
	return &ttlCache[V]{
		ttl:     ttl,
		max:     maxEntries,
		order:   list.New(),
		entries: make(map[string]*list.Element),
	}
}

// add stores value under key (which must be new), making room first.
func (c *ttlCache[V]) add(now time.Time, key string, value V) {
	c.expire(now)
	for len(c.entries) >= c.max {
		c.removeElement(c.order.Front())
	}
	c.entries[key] = c.order.PushBack(&ttlEntry[V]{key: key, expires: now.Add(c.ttl), value: value})
}

// get returns the live value under key.
func (c *ttlCache[V]) get(now time.Time, key string) (V, bool) {
	c.expire(now)
	e, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	return e.Value.(*ttlEntry[V]).value, true
}

// remove forgets key and reports whether it was live.
func (c *ttlCache[V]) remove(now time.Time, key string) bool {
	c.expire(now)
	e, ok := c.entries[key]
	if ok {
		c.removeElement(e)
	}
	return ok
}

func (c *ttlCache[V]) len(now time.Time) int {
	c.expire(now)
	return len(c.entries)
}

func (c *ttlCache[V]) expire(now time.Time) {
	for e := c.order.Front(); e != nil && !now.Before(e.Value.(*ttlEntry[V]).expires); e = c.order.Front() {
		c.removeElement(e)
	}
}

func (c *ttlCache[V]) removeElement(e *list.Element) {
	delete(c.entries, e.Value.(*ttlEntry[V]).key)
	c.order.Remove(e)
}
