package vault

import (
	"sync"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// tenantCacheTTL bounds how long a tenant record read from the store is
// reused. A proxied call needs its tenant twice (the status gate, then
// the wrapped DEK), and the record changes rarely: every change this
// process makes drops the cached copy at once, so the TTL only bounds how
// long a change made elsewhere (another node of a shared database, an
// offline tool) can go unseen.
const tenantCacheTTL = time.Second

// maxCachedTenants bounds the cache; past it the cache starts over.
const maxCachedTenants = 100_000

// tenantCache holds recently read tenant records (copies; wrapped DEKs
// only, never plaintext keys).
type tenantCache struct {
	mu sync.Mutex
	m  map[string]cachedTenant
	// gen counts the forgets of each id, so that a read which started
	// before a write cannot put the old record back after it.
	gen uint64
}

type cachedTenant struct {
	t  storage.Tenant
	at time.Time
}

// get returns a copy of id's record if it is fresh, else the generation a
// read from the store must pass to put.
func (c *tenantCache) get(id string, now time.Time) (storage.Tenant, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok || now.Sub(e.at) >= tenantCacheTTL || now.Before(e.at) {
		return storage.Tenant{}, c.gen, false
	}
	return cloneTenant(e.t), 0, true
}

// put keeps t, read at now, unless a write was made since gen.
func (c *tenantCache) put(t storage.Tenant, now time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.m == nil || len(c.m) >= maxCachedTenants {
		c.m = map[string]cachedTenant{}
	}
	c.m[t.ID] = cachedTenant{t: cloneTenant(t), at: now}
}

// forget drops id's copy: called around every tenant write of this
// process.
func (c *tenantCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.m, id)
}

// cloneTenant copies the DEK list, which callers may edit in place.
func cloneTenant(t storage.Tenant) storage.Tenant {
	t.DEKs = append([]storage.WrappedDEK(nil), t.DEKs...)
	return t
}
