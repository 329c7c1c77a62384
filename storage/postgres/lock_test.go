package postgres_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vaultd/vaultd/internal/pgtest"
	"github.com/vaultd/vaultd/storage/postgres"
)

// lockNodes opens n stores ("nodes") on one fresh, migrated database.
func lockNodes(t *testing.T, n int, o postgres.Options) []*postgres.Store {
	t.Helper()
	db := pgtest.New(t)
	var out []*postgres.Store
	for i := range n {
		oo := o
		oo.ForMigration = i == 0
		s, err := postgres.Open(t.Context(), db.DSN, oo)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if i == 0 {
			if err := s.Migrate(t.Context()); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
		}
		out = append(out, s)
	}
	return out
}

// A key held on one node is not had on another until it is released;
// other keys are free meanwhile.
func TestLockerAcrossNodes(t *testing.T) {
	nodes := lockNodes(t, 2, postgres.Options{})
	a, b := nodes[0].Locker(), nodes[1].Locker()
	unlock, err := a.Lock(t.Context(), "acme\x00crm")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	_, err = b.Lock(ctx, "acme\x00crm")
	cancel()
	if err == nil {
		t.Fatal("the key was had on a second node while held on the first")
	}
	// Another integration, and a key that differs only where NUL was.
	for _, k := range []string{"acme\x00mail", "acme/crm\x00x"} {
		u, err := b.Lock(t.Context(), k)
		if err != nil {
			t.Fatalf("%q: %v", k, err)
		}
		u()
	}
	unlock()
	unlock() // a second call does nothing
	u, err := b.Lock(t.Context(), "acme\x00crm")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	u()
}

// lock_timeout bounds the wait even when ctx has no deadline: it fails
// closed with ErrUnavailable.
func TestLockerLockTimeout(t *testing.T) {
	nodes := lockNodes(t, 2, postgres.Options{LockTimeout: 100 * time.Millisecond})
	unlock, err := nodes[0].Locker().Lock(t.Context(), "t\x00i")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := nodes[1].Locker().Lock(t.Context(), "t\x00i"); !errors.Is(err, postgres.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable (lock_timeout)", err)
	}
}

// Many callers on three nodes: never two holders at once, and every
// caller gets the lock eventually.
func TestLockerMutualExclusion(t *testing.T) {
	nodes := lockNodes(t, 3, postgres.Options{MaxConns: 4})
	var holders, max, done atomic.Int32
	var wg sync.WaitGroup
	for i := range 24 {
		l := nodes[i%3].Locker()
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			unlock, err := l.Lock(ctx, "t\x00hot")
			if err != nil {
				t.Error(err)
				return
			}
			n := holders.Add(1)
			if n > max.Load() {
				max.Store(n)
			}
			holders.Add(-1)
			done.Add(1)
			unlock()
		})
	}
	wg.Wait()
	if max.Load() != 1 || done.Load() != 24 {
		t.Errorf("max holders %d, done %d; want 1 and 24", max.Load(), done.Load())
	}
}

// A cancelled wait leaves nothing held: the key is free afterwards, and
// the pool's connections come back.
func TestLockerCancelledWait(t *testing.T) {
	nodes := lockNodes(t, 2, postgres.Options{MaxConns: 2})
	unlock, err := nodes[0].Locker().Lock(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	l := nodes[1].Locker()
	for range 5 { // more than the pool: a leaked connection would block
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		if _, err := l.Lock(ctx, "k"); err == nil {
			t.Fatal("held twice")
		}
		cancel()
	}
	unlock()
	u, err := l.Lock(t.Context(), "k")
	if err != nil {
		t.Fatalf("after the cancelled waits: %v", err)
	}
	u()
	if err := nodes[1].Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// A refresh lock outlives the pool's idle-in-transaction timeout: its
// transaction sits idle while the holder calls the provider, and the
// server ending the session there would release the lock mid-refresh.
func TestLockerSurvivesIdleTimeout(t *testing.T) {
	nodes := lockNodes(t, 2, postgres.Options{LockTimeout: 100 * time.Millisecond, IdleInTransactionTimeout: 200 * time.Millisecond})
	unlock, err := nodes[0].Locker().Lock(t.Context(), "t\x00i")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	// Setup, not a timing assertion: idle well past the pool's timeout.
	time.Sleep(time.Second)
	if _, err := nodes[1].Locker().Lock(t.Context(), "t\x00i"); !errors.Is(err, postgres.ErrUnavailable) {
		t.Fatalf("second node got the lock after the holder idled: %v", err)
	}
}
