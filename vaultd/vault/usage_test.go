package vault

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// A last_used_at flush while a refresh is in flight must not make the
// refresh's commit fail: the provider has already rotated the refresh
// token, and losing it leaves the integration needing reauthorization.
// (Found by the end-to-end refresh tests.)
func TestUsageFlushDuringRefreshKeepsRotatedToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 30) // due for refresh
	f.svc.MarkUsed("acme", "crm")
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	f.fp.mu.Lock()
	f.fp.gate, f.fp.entered = gate, entered
	f.fp.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		_, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm")
		done <- err
	}()
	<-entered             // the refresh holds the lock and is at the provider
	f.svc.flushUsage(ctx) // the refresh holds the lock: the flush must not write
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("refresh failed after a concurrent usage flush: %v", err)
	}
	in, err := f.store.GetIntegration(ctx, "acme", "crm")
	if err != nil || in.RefreshCount != 1 {
		t.Fatalf("refresh not committed: %v %+v", err, in.RefreshCount)
	}
	// The deferred last-use time is written by the next flush.
	f.svc.flushUsage(ctx)
	if in, _ := f.store.GetIntegration(ctx, "acme", "crm"); in.LastUsedAt.IsZero() {
		t.Fatal("last_used_at lost after a busy flush")
	}
}

// With a refresh margin longer than the token lifetime every fresh token
// is already "due"; callers that queued behind the one refresh must use
// its token rather than refresh again one after another.
func TestMarginBeyondLifetimeOneRefresh(t *testing.T) {
	t.Parallel()
	locks := &countingLocker{reached: make(chan struct{})}
	f := newFixture(t, func(o *Options) { locks.Locker = NewKeyedMutex(); o.Locker = locks })
	f.svc.onFlightJoin = locks.hit
	ctx := t.Context()
	p, _ := f.svc.Provider("example")
	q := *p
	q.RefreshMargin = 2 * time.Hour // tokens live 1h
	f.svc.SetProviders(Providers{"example": &q})
	f.store0(t, "acme", "crm", 30)
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	f.fp.mu.Lock()
	f.fp.gate, f.fp.entered = gate, entered
	f.fp.mu.Unlock()
	const n = 50
	locks.want.Store(locks.calls.Load() + n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.svc.AccessToken(ctx, Caller{}, "acme", "crm")
		}()
	}
	<-entered
	// Every caller must be queued on the lock the refresh holds before it
	// ends: with the margin beyond the lifetime, a caller arriving later
	// reads the fresh token as due and refreshes again, by design.
	<-locks.reached
	close(gate)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	if c := f.fp.calls.Load(); c != 1 {
		t.Fatalf("token endpoint called %d times, want 1", c)
	}
}

// countingLocker counts Lock calls and closes reached when the count
// reaches want, so a test can wait until its callers queue.
type countingLocker struct {
	Locker
	calls   atomic.Int64
	want    atomic.Int64
	reached chan struct{}
}

func (c *countingLocker) Lock(ctx context.Context, key string) (func(), error) {
	c.hit()
	return c.Locker.Lock(ctx, key)
}

// hit counts a caller that waits for the refresh: on the lock, or (the
// service's onFlightJoin hook) on the refresh another caller leads.
func (c *countingLocker) hit() {
	if n := c.calls.Add(1); n == c.want.Load() {
		close(c.reached)
	}
}

// countingStore counts integration reads.
type countingStore struct {
	Store
	gets atomic.Int64
}

func (c *countingStore) GetIntegration(ctx context.Context, tenantID, id string) (storage.Integration, error) {
	c.gets.Add(1)
	return c.Store.GetIntegration(ctx, tenantID, id)
}

// A proxied call reads its integration once: Lookup's record serves the
// edge's gates and the token's fast path (the profile showed the second
// read and JSON decode at about 7% of vaultd's CPU). A due refresh still
// re-reads under the lock.
func TestLookupThenTokenReadsOnce(t *testing.T) {
	t.Parallel()
	var cs *countingStore
	f := newFixture(t, func(o *Options) { cs = &countingStore{Store: o.Store}; o.Store = cs })
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	before := cs.gets.Load()
	ref, err := f.svc.Lookup(ctx, "acme", "crm")
	if err != nil || ref.Provider != "example" {
		t.Fatalf("Lookup: %+v %v", ref, err)
	}
	l, err := f.svc.AccessTokenFrom(ctx, Caller{}, ref)
	if err != nil || l.Token.Reveal() != "at-0" {
		t.Fatalf("AccessTokenFrom: %q %v", l.Token.Reveal(), err)
	}
	if n := cs.gets.Load() - before; n != 1 {
		t.Fatalf("integration reads for one call: %d, want 1", n)
	}
	if _, err := f.svc.Lookup(ctx, "globex", "crm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("foreign Lookup: %v", err)
	}
	if _, err := f.svc.AccessTokenFrom(ctx, Caller{}, Ref{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("zero Ref: %v", err)
	}
	// Due for refresh: the refresh re-reads under the lock and refreshes once.
	f.clk.Add(2 * time.Hour)
	ref, _ = f.svc.Lookup(ctx, "acme", "crm")
	if l, err := f.svc.AccessTokenFrom(ctx, Caller{}, ref); err != nil || l.Token.Reveal() != "at-1" || f.fp.calls.Load() != 1 {
		t.Fatalf("due token: %q %v (%d refreshes)", l.Token.Reveal(), err, f.fp.calls.Load())
	}
}
