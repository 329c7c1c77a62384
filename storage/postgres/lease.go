package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/vaultd/vaultd/storage"
)

// ErrLeaseLost: the session that held a lease ended (the connection
// broke, the server restarted or terminated it), so the server has
// released the lease and another node may hold it now.
var ErrLeaseLost = errors.New("storage/postgres: lease lost")

// Leaser hands out named leases: each is held by at most one Leaser
// among every vaultd node sharing the database (and one holder within a
// Leaser). A lease is a session-level
//
//	pg_try_advisory_lock(hashtextextended('vaultd/lease/<name>', 0))
//
// on a connection of the Leaser's own, outside the pool, so a lease held
// for a long time pins none of the connections the writes need. The
// server releases a session's advisory locks when the session ends: a
// node that dies (kill -9, a crash, a lost network once the server's TCP
// keepalive notices) gives up its leases with its connection, and
// another node takes the next round. TryLease never waits: a lease held
// elsewhere is ok == false, and the caller skips its round.
//
// A Leaser is safe for concurrent use; Close ends its session.
type Leaser struct {
	s *Store

	mu   sync.Mutex
	conn *pgx.Conn         // nil until the first TryLease, or after a failure
	gen  uint64            // which session conn is: bumped when it is dropped
	held map[string]uint64 // name -> the session it was taken on
}

// Leaser returns a Leaser on the store's database. It connects on first
// use.
func (s *Store) Leaser() *Leaser {
	return &Leaser{s: s, held: map[string]uint64{}}
}

// leaseKey is the text PostgreSQL hashes for a lease's name. Refresh
// locks are under "vaultd/refresh/": the two never share a key (a 64-bit
// hash collision would only make one wait or skip a round).
func leaseKey(name string) string { return "vaultd/lease/" + name }

// Lease is one named lease held by a Leaser.
type Lease struct {
	l    *Leaser
	name string
	gen  uint64
	once sync.Once
}

// TryLease takes the lease name if no session holds it: ok is false when
// another node (or another holder of this Leaser) has it. err is set only
// when the database could not answer (ErrUnavailable, storage.ErrClosed,
// the context's error); the lease is not held then either.
func (l *Leaser) TryLease(ctx context.Context, name string) (*Lease, bool, error) {
	s := l.s
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.closed.Load() {
		l.dropLocked()
		return nil, false, storage.ErrClosed
	}
	if _, ok := l.held[name]; ok {
		return nil, false, nil
	}
	if l.conn == nil {
		cctx, cancel := context.WithTimeout(ctx, s.o.AcquireTimeout)
		conn, err := pgx.ConnectConfig(cctx, s.pool.Config().ConnConfig)
		cancel()
		if err != nil {
			if ctx.Err() == nil && cctx.Err() != nil {
				return nil, false, fmt.Errorf("%w: lease %q: no connection within %s", ErrUnavailable, name, s.o.AcquireTimeout)
			}
			return nil, false, fmt.Errorf("storage/postgres: lease %q: %w", name, s.mapErr(ctx, err))
		}
		l.conn = conn
	}
	var got bool
	qctx, cancel := context.WithTimeout(ctx, s.o.AcquireTimeout)
	err := l.conn.QueryRow(qctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, leaseKey(name)).Scan(&got)
	cancel()
	if err != nil {
		// The session's state is unknown (it may hold the lock): end it,
		// which releases whatever it held.
		l.dropLocked()
		return nil, false, fmt.Errorf("storage/postgres: lease %q: %w", name, s.mapErr(ctx, err))
	}
	if !got {
		return nil, false, nil
	}
	l.held[name] = l.gen
	return &Lease{l: l, name: name, gen: l.gen}, true, nil
}

// dropLocked closes the session (the server releases its leases) and
// forgets every lease taken on it.
func (l *Leaser) dropLocked() {
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), l.s.o.AcquireTimeout)
		_ = l.conn.Close(ctx)
		cancel()
		l.conn = nil
	}
	l.gen++
	clear(l.held)
}

// Close ends the Leaser's session, releasing every lease it holds.
func (l *Leaser) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropLocked()
}

// Held reports whether the lease is still held: nil when its session
// still answers, ErrLeaseLost (wrapped) when it was released or its
// session ended. A failed check ends the session, so that the server
// releases the lease for certain.
func (x *Lease) Held(ctx context.Context) error {
	l := x.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if !x.heldLocked() {
		return fmt.Errorf("%w: %q", ErrLeaseLost, x.name)
	}
	qctx, cancel := context.WithTimeout(ctx, l.s.o.AcquireTimeout)
	err := l.conn.Ping(qctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("storage/postgres: lease %q: %w", x.name, ctx.Err())
		}
		l.dropLocked()
		return fmt.Errorf("%w: %q: %w", ErrLeaseLost, x.name, l.s.mapErr(ctx, err))
	}
	return nil
}

// heldLocked: x's session is the current one and x was not released.
func (x *Lease) heldLocked() bool {
	g, ok := x.l.held[x.name]
	return ok && g == x.gen && x.l.conn != nil && x.l.gen == x.gen
}

// Release gives the lease up; later calls do nothing. When the unlock
// cannot be sent, the session is closed instead, which releases it too.
func (x *Lease) Release() {
	x.once.Do(func() {
		l := x.l
		l.mu.Lock()
		defer l.mu.Unlock()
		if !x.heldLocked() {
			return // its session is gone, and the lease with it
		}
		delete(l.held, x.name)
		ctx, cancel := context.WithTimeout(context.Background(), l.s.o.AcquireTimeout)
		var ok bool
		err := l.conn.QueryRow(ctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, leaseKey(x.name)).Scan(&ok)
		cancel()
		if err != nil || !ok {
			l.dropLocked()
		}
	})
}
