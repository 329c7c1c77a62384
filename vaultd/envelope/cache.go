package envelope

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// The plaintext DEK cache: lookup with singleflight unwrapping, reference
// counting, eviction and the TTL janitor.

// wrappedIdentity names the exact wrapped bytes a cached plaintext came from.
func wrappedIdentity(w storage.WrappedDEK) string {
	b := make([]byte, 0, 9+len(w.Nonce)+len(w.Ciphertext))
	if w.TenantWrapped {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, w.KEKVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(w.Nonce)))
	b = append(b, w.Nonce...)
	return string(append(b, w.Ciphertext...))
}

// maxAcquireAttempts bounds how often a waiter retries after the unwrap it
// waited on failed only because its leader's context ended.
const maxAcquireAttempts = 3

// acquire returns the cache entry for w with a reference held; the caller
// must release it. On a miss exactly one caller per wrapped DEK unwraps;
// the others wait for it and share its result.
func (k *Keys) acquire(ctx context.Context, tenantID string, w storage.WrappedDEK) (*entry, error) {
	if tenantID == "" {
		return nil, fmt.Errorf("%w: empty tenant id", ErrAAD)
	}
	key := cacheKey{tenant: tenantID, version: w.Version}
	fk := flightKey{cacheKey: key, wrapped: wrappedIdentity(w)}
	missed := false
	var lastErr error
	for range maxAcquireAttempts {
		k.mu.Lock()
		if k.closed {
			k.mu.Unlock()
			return nil, ErrClosed
		}
		var toFree []*entry
		if e := k.entries[key]; e != nil {
			if e.wrapped == fk.wrapped && k.now().Before(e.expires) {
				e.refs++
				k.lru.MoveToFront(e.elem)
				if !missed {
					k.stats.Hits++
				}
				k.mu.Unlock()
				return e, nil
			}
			// Expired, or the tenant record now carries other wrapped
			// bytes for this version (re-wrapped, or tenant recreated).
			toFree = k.removeLocked(e, toFree)
		}
		if !missed {
			missed = true
			k.stats.Misses++
		}
		if f := k.flights[fk]; f != nil {
			f.waiters++ // the leader takes a reference for us
			k.mu.Unlock()
			k.free(toFree)
			e, err := k.wait(ctx, f)
			if err != nil && isContextErr(err) && ctx.Err() == nil {
				lastErr = err // the leader gave up; we need not
				continue
			}
			return e, err
		}
		f := &flight{done: make(chan struct{})}
		k.flights[fk] = f
		k.stats.Unwraps++
		k.mu.Unlock()
		k.free(toFree)

		e, err := k.load(ctx, tenantID, w, fk.wrapped)

		k.mu.Lock()
		delete(k.flights, fk)
		f.finished = true
		f.err = err
		if err == nil {
			f.e = e
			e.refs = 1 + f.waiters
			if !f.evicted && !k.closed {
				toFree = k.insertLocked(e, nil)
			} else {
				// Evicted while loading: serve the callers already
				// waiting, then free with the last release.
				e.dead = true
				toFree = nil
			}
		}
		close(f.done)
		k.mu.Unlock()
		k.free(toFree)
		return e, err
	}
	return nil, fmt.Errorf("envelope: DEK for tenant %q version %d: gave up after %d attempts: %w", tenantID, w.Version, maxAcquireAttempts, lastErr)
}

// wait waits for f's leader. If ctx ends first the waiter withdraws, unless
// the leader already counted a reference for it.
func (k *Keys) wait(ctx context.Context, f *flight) (*entry, error) {
	select {
	case <-f.done:
	case <-ctx.Done():
		k.mu.Lock()
		if !f.finished {
			f.waiters--
			k.mu.Unlock()
			return nil, fmt.Errorf("envelope: waiting for DEK unwrap: %w", ctx.Err())
		}
		k.mu.Unlock()
	}
	if f.err != nil {
		return nil, f.err
	}
	return f.e, nil
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// load unwraps w (both layers when tenant-wrapped) into a fresh locked
// buffer.
func (k *Keys) load(ctx context.Context, tenantID string, w storage.WrappedDEK, identity string) (*entry, error) {
	buf, err := k.allocBuf()
	if err != nil {
		return nil, err
	}
	if err := k.unwrapDEK(ctx, tenantID, w, buf.Bytes()); err != nil {
		_ = buf.Free()
		return nil, err
	}
	if err := buf.Freeze(); err != nil {
		_ = buf.Free()
		return nil, fmt.Errorf("envelope: DEK buffer: %w", err)
	}
	return &entry{
		key:     cacheKey{tenant: tenantID, version: w.Version},
		wrapped: identity,
		buf:     buf,
		expires: k.now().Add(k.ttl),
	}, nil
}

// insertLocked adds e (replacing any entry for its key) and trims the LRU.
func (k *Keys) insertLocked(e *entry, toFree []*entry) []*entry {
	if old := k.entries[e.key]; old != nil {
		toFree = k.removeLocked(old, toFree)
	}
	e.elem = k.lru.PushFront(e)
	k.entries[e.key] = e
	for k.lru.Len() > k.max {
		toFree = k.removeLocked(k.lru.Back().Value.(*entry), toFree)
	}
	k.stats.Entries = len(k.entries)
	return toFree
}

// removeLocked takes e out of the cache; it is appended to toFree if no
// caller is using it, otherwise the last release frees it.
func (k *Keys) removeLocked(e *entry, toFree []*entry) []*entry {
	if e.dead {
		return toFree
	}
	e.dead = true
	k.lru.Remove(e.elem)
	delete(k.entries, e.key)
	k.stats.Evictions++
	k.stats.Entries = len(k.entries)
	if e.refs == 0 {
		toFree = append(toFree, e)
	}
	return toFree
}

func (k *Keys) release(e *entry) {
	k.mu.Lock()
	e.refs--
	last := e.dead && e.refs == 0
	k.mu.Unlock()
	if last {
		k.destroy(e)
	}
}

func (k *Keys) free(es []*entry) {
	for _, e := range es {
		k.destroy(e)
	}
}

// destroy zeroes and unmaps an entry's buffer (outside k.mu: syscalls).
func (k *Keys) destroy(e *entry) {
	if err := e.buf.Wipe(); err != nil {
		k.log.Error("envelope: wiping DEK buffer failed", "tenant_id", e.key.tenant, "dek_version", e.key.version, "err", err)
	}
	if k.beforeFree != nil {
		k.beforeFree(e.buf.Bytes())
	}
	if err := e.buf.Free(); err != nil {
		k.log.Error("envelope: freeing DEK buffer failed", "tenant_id", e.key.tenant, "dek_version", e.key.version, "err", err)
	}
}

// Evict drops every cached DEK of tenantID (disabled tenant, deleted
// integration, rotation) and zeroes them; buffers in use are zeroed when
// their last user finishes.
func (k *Keys) Evict(tenantID string) {
	k.mu.Lock()
	for fk, f := range k.flights {
		if fk.tenant == tenantID {
			f.evicted = true // do not resurrect what is being evicted
		}
	}
	var toFree []*entry
	for key, e := range k.entries {
		if key.tenant == tenantID {
			toFree = k.removeLocked(e, toFree)
		}
	}
	k.mu.Unlock()
	k.free(toFree)
}

// EvictAll drops and zeroes every cached DEK.
func (k *Keys) EvictAll() {
	k.mu.Lock()
	toFree := k.evictAllLocked()
	k.mu.Unlock()
	k.free(toFree)
}

func (k *Keys) evictAllLocked() []*entry {
	for _, f := range k.flights {
		f.evicted = true
	}
	var toFree []*entry
	for _, e := range k.entries {
		toFree = k.removeLocked(e, toFree)
	}
	return toFree
}

// sweep drops expired entries (the janitor's job; also callable by tests).
func (k *Keys) sweep() {
	k.mu.Lock()
	now := k.now()
	var toFree []*entry
	for el := k.lru.Front(); el != nil; {
		next := el.Next()
		if e := el.Value.(*entry); !now.Before(e.expires) {
			toFree = k.removeLocked(e, toFree)
		}
		el = next
	}
	k.mu.Unlock()
	k.free(toFree)
}

func (k *Keys) runJanitor(iv time.Duration) {
	defer k.janitor.Done()
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
			k.sweep()
		}
	}
}

// Stats returns a snapshot of the cache counters.
func (k *Keys) Stats() Stats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.stats
}
