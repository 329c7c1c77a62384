package postgres_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/postgres"
	"github.com/vaultd/vaultd/storage/storagetest"
)

// terminate ends the session pid (as a failover or an operator's
// pg_terminate_backend does) and waits until the server has closed it.
func terminate(t *testing.T, c *pgx.Conn, pid uint32) {
	t.Helper()
	ctx := context.Background()
	var ok bool
	if err := c.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, int32(pid)).Scan(&ok); err != nil || !ok {
		t.Errorf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
		return
	}
	for range 100000 {
		var n int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, int32(pid)).Scan(&n); err != nil {
			t.Errorf("pg_stat_activity: %v", err)
			return
		}
		if n == 0 {
			return
		}
	}
	t.Errorf("session %d never ended", pid)
}

// A read whose connection is killed mid-transaction is retried once, on
// another connection, and answers; lists are not doubled by the retry.
func TestReadRetriedOnceAfterConnectionLoss(t *testing.T) {
	s, db := openNew(t, postgres.Options{})
	ctx := t.Context()
	for _, id := range []string{"acme", "beta", "gamma"} {
		if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant(id)); err != nil {
			t.Fatal(err)
		}
	}
	admin := rawConn(t, db.DSN)
	var calls atomic.Int32
	killFirst := func(ctx context.Context, pid uint32, read bool) {
		if calls.Add(1) == 1 {
			terminate(t, admin, pid)
		}
	}
	postgres.SetTxHook(s, killFirst)
	if tn, err := s.GetTenant(ctx, "acme"); err != nil || tn.ID != "acme" {
		t.Fatalf("GetTenant after its connection was killed: %+v, %v", tn, err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("GetTenant ran %d transactions, want 2 (one retry)", n)
	}
	calls.Store(0)
	ts, err := s.ListTenants(ctx)
	if err != nil || len(ts) != 3 {
		t.Fatalf("ListTenants after its connection was killed: %d tenants, %v; want 3", len(ts), err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("ListTenants ran %d transactions, want 2", n)
	}
	calls.Store(0)
	if err := s.Ping(ctx); err != nil || calls.Load() != 2 {
		t.Fatalf("Ping: %v after %d transactions, want nil after 2", err, calls.Load())
	}

	// Bounded: a connection lost on the retry too is ErrUnavailable.
	calls.Store(0)
	postgres.SetTxHook(s, func(ctx context.Context, pid uint32, read bool) {
		calls.Add(1)
		terminate(t, admin, pid)
	})
	if _, err := s.GetTenant(ctx, "acme"); !errors.Is(err, postgres.ErrUnavailable) {
		t.Fatalf("GetTenant with every connection killed: %v, want ErrUnavailable", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("GetTenant ran %d transactions, want 2 (one retry only)", n)
	}
}

// A write whose connection is killed mid-transaction is not retried: it
// answers ErrUnavailable after one attempt, and (killed before COMMIT)
// left nothing behind.
func TestWriteNotRetriedAfterConnectionLoss(t *testing.T) {
	s, db := openNew(t, postgres.Options{})
	ctx := t.Context()
	admin := rawConn(t, db.DSN)
	var txs, builds atomic.Int32
	postgres.SetTxHook(s, func(ctx context.Context, pid uint32, read bool) {
		txs.Add(1)
		if !read {
			terminate(t, admin, pid)
		}
	})
	_, _, err := s.CreateTenant(ctx, storagetest.NewTenant("acme"), func(h storage.AuditHead) (storage.AuditRecord, error) {
		builds.Add(1)
		return storagetest.ChainBuilder(`"action":"tenant.create"`)(h)
	})
	if !errors.Is(err, postgres.ErrUnavailable) {
		t.Fatalf("CreateTenant with its connection killed: %v, want ErrUnavailable", err)
	}
	if n := txs.Load(); n != 1 {
		t.Fatalf("CreateTenant ran %d transactions, want 1 (writes are never retried)", n)
	}
	if n := builds.Load(); n != 0 {
		t.Fatalf("the AuditFunc ran %d times on a dead connection", n)
	}
	postgres.SetTxHook(s, nil)
	if _, err := s.GetTenant(ctx, "acme"); !errors.Is(err, storage.ErrTenantNotFound) {
		t.Fatalf("GetTenant of the failed create: %v, want ErrTenantNotFound", err)
	}
	if h, err := s.AuditHead(ctx); err != nil || h.Seq != 0 {
		t.Fatalf("AuditHead = %+v, %v; want the empty chain", h, err)
	}
	// The caller's own retry is what completes it.
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatalf("the caller's retry: %v", err)
	}
}
