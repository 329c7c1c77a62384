package vault

import (
	"context"
	"errors"
	"sync"
)

// ErrLockUnavailable is returned when a per-integration lock cannot be had
// (context done or timeout). Callers fail closed.
var ErrLockUnavailable = errors.New("vault: integration lock unavailable")

// Locker serialises work on one key (tenant + integration) across callers.
// The embedded store is single-process (bbolt holds a file lock), so the
// in-process KeyedMutex is enough; a distributed store would plug a lease
// based lock in here.
type Locker interface {
	// Lock blocks until the key is held or ctx is done. unlock must be
	// called exactly once.
	Lock(ctx context.Context, key string) (unlock func(), err error)
}

// KeyedMutex is an in-process Locker. Entries are reference counted and
// removed when unused, so the map stays bounded by the number of keys in
// use, not by the number ever seen.
type KeyedMutex struct {
	mu      sync.Mutex
	entries map[string]*keyEntry
}

type keyEntry struct {
	ch   chan struct{} // holds one token while the key is locked
	refs int
}

// NewKeyedMutex returns an empty KeyedMutex.
func NewKeyedMutex() *KeyedMutex {
	return &KeyedMutex{entries: make(map[string]*keyEntry)}
}

// Lock implements Locker. A channel rather than sync.Mutex so that waiting
// honours ctx cancellation.
func (k *KeyedMutex) Lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	e, ok := k.entries[key]
	if !ok {
		e = &keyEntry{ch: make(chan struct{}, 1)}
		k.entries[key] = e
	}
	e.refs++
	k.mu.Unlock()

	select {
	case e.ch <- struct{}{}:
		var once sync.Once
		return func() {
			once.Do(func() {
				<-e.ch
				k.release(key, e)
			})
		}, nil
	case <-ctx.Done():
		k.release(key, e)
		return nil, errors.Join(ErrLockUnavailable, ctx.Err())
	}
}

func (k *KeyedMutex) release(key string, e *keyEntry) {
	k.mu.Lock()
	e.refs--
	if e.refs == 0 {
		delete(k.entries, key)
	}
	k.mu.Unlock()
}

// Len is the number of keys currently locked or waited on (for tests and
// metrics).
func (k *KeyedMutex) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.entries)
}
