package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vaultd/vaultd/storage"
)

// Locker is the cross-node refresh lock: a vault.Locker whose holder is
// alone among every vaultd node sharing the database. Lock opens a
// transaction on a connection of its own and takes
//
//	pg_advisory_xact_lock(hashtextextended('vaultd/refresh/<tenant>/<integration>', 0))
//
// in it; the transaction stays open, holding the lock, until unlock rolls
// it back. A node that dies releases its locks with its sessions
// (idle_in_transaction_session_timeout is the backstop for a hung one).
// The wait is bounded by ctx and by lock_timeout (the smaller of ctx's
// remaining time and Options.LockTimeout): a lock not had in time is an
// error, and the caller fails closed rather than refresh without it.
//
// Each lock held pins one pooled connection, and its holder needs another
// for its writes; so at most half the pool (at least one) is lent to held
// or awaited locks, the rest stays for the writes that release them. The
// daemon puts an in-process vault.KeyedMutex in front, so one caller per
// node and key waits here.
type Locker struct {
	s     *Store
	slots chan struct{}
}

// Locker returns a cross-node lock on the store. Each Locker has its own
// connection budget (half the pool): a process makes one.
func (s *Store) Locker() *Locker {
	return &Locker{s: s, slots: make(chan struct{}, max(1, int(s.o.MaxConns)/2))}
}

// lockKey is the text PostgreSQL hashes for the vault's key (tenant, NUL,
// integration): PostgreSQL text cannot hold NUL, and ids cannot contain
// "/", so "/" keeps the mapping injective. A 64-bit hash collision only
// serialises two unrelated refreshes.
// lockHoldBackstop bounds how long a refresh lock's session may sit idle
// before the server ends it (and releases the lock): far above the longest
// legitimate hold, a disconnect's two revocation calls plus its commit.
const lockHoldBackstop = 15 * time.Minute

func lockKey(key string) string {
	return "vaultd/refresh/" + strings.ReplaceAll(key, "\x00", "/")
}

// Lock blocks until key is held across the cluster, ctx is done or
// lock_timeout passes. unlock must be called exactly once (later calls do
// nothing).
func (l *Locker) Lock(ctx context.Context, key string) (func(), error) {
	s := l.s
	if s.closed.Load() {
		return nil, storage.ErrClosed
	}
	select {
	case l.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("storage/postgres: refresh lock: %w", ctx.Err())
	}
	unlock, err := l.lock(ctx, key)
	if err != nil {
		<-l.slots
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			unlock()
			<-l.slots
		})
	}, nil
}

func (l *Locker) lock(ctx context.Context, key string) (func(), error) {
	s := l.s
	conn, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		conn.Release()
		return nil, s.mapErr(ctx, err)
	}
	// end rolls the transaction back on a context of its own: a cancelled
	// caller must still release the lock (pgx closes the connection if it
	// cannot, which the server takes as a release too).
	end := func() {
		rctx, cancel := context.WithTimeout(context.Background(), s.o.AcquireTimeout)
		_ = tx.Rollback(rctx)
		cancel()
		conn.Release()
	}
	wait := s.o.LockTimeout
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl))
	}
	// lock_timeout 0 would mean "wait forever": at least 1ms.
	ms := strconv.FormatInt(max(1, wait.Milliseconds()), 10)
	if _, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, ms); err != nil {
		end()
		return nil, fmt.Errorf("storage/postgres: refresh lock: %w", s.mapErr(ctx, err))
	}
	// The lock's transaction is idle while its holder works (a provider
	// call, sealing, the commit on another connection): the pool's
	// idle-in-transaction timeout would end the session, and with it the
	// lock, in the middle of a refresh. This transaction gets a backstop of
	// its own, above the longest hold (provider timeouts plus the commit
	// budget), for a holder that has really hung.
	if _, err := tx.Exec(ctx, `SELECT set_config('idle_in_transaction_session_timeout', $1, true)`,
		strconv.FormatInt(lockHoldBackstop.Milliseconds(), 10)); err != nil {
		end()
		return nil, fmt.Errorf("storage/postgres: refresh lock: %w", s.mapErr(ctx, err))
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, lockKey(key)); err != nil {
		end()
		return nil, fmt.Errorf("storage/postgres: refresh lock: %w", s.mapErr(ctx, err))
	}
	return end, nil
}
