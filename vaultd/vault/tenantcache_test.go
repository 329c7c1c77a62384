package vault

import (
	"testing"
	"time"

	"github.com/vaultd/vaultd/storage"
)

func TestTenantCache(t *testing.T) {
	t.Parallel()
	var c tenantCache
	now := time.Unix(1000, 0)
	_, gen, ok := c.get("acme", now)
	if ok {
		t.Fatal("empty cache hit")
	}
	c.put(storage.Tenant{ID: "acme", DEKs: []storage.WrappedDEK{{Version: 1}}}, now, gen)
	got, _, ok := c.get("acme", now.Add(tenantCacheTTL/2))
	if !ok || got.DEKs[0].Version != 1 {
		t.Fatalf("fresh entry: %+v %v", got, ok)
	}
	got.DEKs[0].Version = 9 // a caller editing its copy
	if again, _, _ := c.get("acme", now); again.DEKs[0].Version != 1 {
		t.Fatal("a caller's edit reached the cached record")
	}
	if _, _, ok := c.get("acme", now.Add(tenantCacheTTL)); ok {
		t.Fatal("stale entry served")
	}
	// A read that began before a write must not put the old record back.
	_, gen, _ = c.get("globex", now)
	c.forget("globex")
	c.put(storage.Tenant{ID: "globex", Status: storage.TenantActive}, now, gen)
	if _, _, ok := c.get("globex", now); ok {
		t.Fatal("a read from before the write was cached after it")
	}
}
