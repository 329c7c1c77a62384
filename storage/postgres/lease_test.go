package postgres_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vaultd/vaultd/internal/pgtest"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/postgres"
)

// leaseNodes opens n stores on one fresh, migrated database and returns
// them with the database.
func leaseNodes(t *testing.T, n int) ([]*postgres.Store, pgtest.Database) {
	t.Helper()
	db := pgtest.New(t)
	var out []*postgres.Store
	for i := range n {
		s, err := postgres.Open(t.Context(), db.DSN, postgres.Options{ForMigration: i == 0})
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
	return out, db
}

// A lease is had by one Leaser at a time, across nodes and within one;
// other names are free meanwhile; a release hands it on.
func TestLeaseOneHolder(t *testing.T) {
	nodes, _ := leaseNodes(t, 2)
	a, b := nodes[0].Leaser(), nodes[1].Leaser()
	defer a.Close()
	defer b.Close()
	ctx := t.Context()
	x, ok, err := a.TryLease(ctx, "sweep")
	if err != nil || !ok {
		t.Fatalf("first TryLease: ok=%v err=%v", ok, err)
	}
	if _, ok, err := b.TryLease(ctx, "sweep"); ok || err != nil {
		t.Fatalf("second node: ok=%v err=%v; want false, nil", ok, err)
	}
	if _, ok, err := a.TryLease(ctx, "sweep"); ok || err != nil {
		t.Fatalf("same Leaser again: ok=%v err=%v; want false, nil", ok, err)
	}
	y, ok, err := b.TryLease(ctx, "webhooks")
	if err != nil || !ok {
		t.Fatalf("another name: ok=%v err=%v", ok, err)
	}
	defer y.Release()
	if err := x.Held(ctx); err != nil {
		t.Fatalf("Held while held: %v", err)
	}
	x.Release()
	x.Release() // a second call does nothing
	if err := x.Held(ctx); !errors.Is(err, postgres.ErrLeaseLost) {
		t.Fatalf("Held after Release = %v, want ErrLeaseLost", err)
	}
	z, ok, err := b.TryLease(ctx, "sweep")
	if err != nil || !ok {
		t.Fatalf("after release: ok=%v err=%v", ok, err)
	}
	z.Release()
	// Released on both: a is free to take it again.
	w, ok, err := a.TryLease(ctx, "sweep")
	if err != nil || !ok {
		t.Fatalf("again on a: ok=%v err=%v", ok, err)
	}
	w.Release()
}

// A holder whose session ends (a node killed: the server ends its
// session) loses the lease: the server releases it, another node takes
// it, and the old holder's Held says so. The old Leaser reconnects for
// its next TryLease.
func TestLeaseHolderDies(t *testing.T) {
	nodes, db := leaseNodes(t, 2)
	a, b := nodes[0].Leaser(), nodes[1].Leaser()
	defer a.Close()
	defer b.Close()
	ctx := t.Context()
	x, ok, err := a.TryLease(ctx, "revocations")
	if err != nil || !ok {
		t.Fatalf("TryLease: ok=%v err=%v", ok, err)
	}
	// End every session holding an advisory lock in this database: a's.
	c := rawConn(t, db.DSN)
	var n int
	if err := c.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND pid <> pg_backend_pid()
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("terminated %d sessions, want 1", n)
	}
	// pg_terminate_backend returns before the session is gone: b may
	// need a few tries, each of which is a real TryLease.
	var y interface{ Release() }
	for range 500 {
		if l, ok, err := b.TryLease(ctx, "revocations"); err != nil {
			t.Fatal(err)
		} else if ok {
			y = l
			break
		}
	}
	if y == nil {
		t.Fatal("the lease of a terminated session was never released")
	}
	if err := x.Held(ctx); !errors.Is(err, postgres.ErrLeaseLost) {
		t.Fatalf("old holder's Held = %v, want ErrLeaseLost", err)
	}
	x.Release() // nothing to release: no error, no panic
	if _, ok, err := a.TryLease(ctx, "revocations"); ok || err != nil {
		t.Fatalf("old holder while b has it: ok=%v err=%v; want false, nil", ok, err)
	}
	y.Release()
	l, ok, err := a.TryLease(ctx, "revocations")
	if err != nil || !ok {
		t.Fatalf("old holder after b released: ok=%v err=%v", ok, err)
	}
	l.Release()
}

// Closing a Leaser releases what it holds; a closed store answers
// ErrClosed.
func TestLeaseCloseReleases(t *testing.T) {
	nodes, _ := leaseNodes(t, 2)
	a, b := nodes[0].Leaser(), nodes[1].Leaser()
	defer b.Close()
	ctx := t.Context()
	if _, ok, err := a.TryLease(ctx, "audit-retention"); err != nil || !ok {
		t.Fatalf("TryLease: ok=%v err=%v", ok, err)
	}
	a.Close()
	x, ok, err := b.TryLease(ctx, "audit-retention")
	if err != nil || !ok {
		t.Fatalf("after Close: ok=%v err=%v", ok, err)
	}
	x.Release()
	_ = nodes[0].Close()
	if _, _, err := a.TryLease(ctx, "x"); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("closed store: %v, want ErrClosed", err)
	}
}

// Rounds on three nodes, each taking the lease first: never two at once.
func TestLeaseMutualExclusion(t *testing.T) {
	nodes, _ := leaseNodes(t, 3)
	var holders, maxHolders, ran atomic.Int32
	var wg sync.WaitGroup
	for i := range 3 {
		l := nodes[i].Leaser()
		defer l.Close()
		wg.Go(func() {
			for range 50 {
				x, ok, err := l.TryLease(t.Context(), "sweep")
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					continue
				}
				n := holders.Add(1)
				if n > maxHolders.Load() {
					maxHolders.Store(n)
				}
				ran.Add(1)
				holders.Add(-1)
				x.Release()
			}
		})
	}
	wg.Wait()
	if maxHolders.Load() != 1 || ran.Load() == 0 {
		t.Fatalf("max holders %d, rounds run %d; want 1 and > 0", maxHolders.Load(), ran.Load())
	}
}
