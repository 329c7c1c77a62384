package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/storage/postgres"
	"github.com/vaultd/vaultd/vaultd/config"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// store is what the daemon needs of a backend: the contract and the
// capabilities the audit retention, the revocation queue and the webhook
// dispatcher use. Both backends ([storage] backend) have them all.
type store interface {
	storage.Store
	storage.AuditPruner
	storage.RevocationStore
	storage.DeliveryStore
}

var (
	_ store = (*bolt.Store)(nil)
	_ store = (*postgres.Store)(nil)
)

// openStore opens the configured backend and returns the refresh lock the
// service runs under. bbolt is one process (its file lock), so the
// in-process KeyedMutex is enough. With postgres the nodes share the
// database, so a refresh also takes the database's advisory lock for its
// integration; the KeyedMutex goes first so that one caller per node, not
// every caller, waits on (and pins a connection of) the database.
func (d *daemon) openStore(ctx context.Context, cfg *config.Config, dsn secret.String, cl *closers) (vault.Locker, error) {
	if cfg.Storage.Backend == config.BackendPostgres {
		st, err := postgres.Open(ctx, dsn, postgres.Options{Logger: d.log, MaxConns: int32(cfg.Storage.MaxConnections)})
		if err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
		d.store, d.sharedStore = st, true
		cl.add(func() { _ = st.Close() })
		return chainLocker{local: vault.NewKeyedMutex(), shared: st.Locker()}, nil
	}
	st, err := bolt.Open(ctx, cfg.Storage.Path, bolt.Options{LockTimeout: cfg.Storage.LockTimeout.Duration(), Logger: d.log})
	if err != nil {
		return nil, err
	}
	d.store = st
	cl.add(func() { _ = st.Close() })
	return vault.NewKeyedMutex(), nil
}

// auditWALPath is the audit WAL for [audit] sync = "batch" ("" = none: every
// event commits with its answer).
//
// The WAL is a file beside one node's database. With postgres the trail is
// shared: events parked in one node's WAL would reach the chain only when
// that node commits them, and never if it does not come back, while the
// other nodes chain on without them. So with postgres every event commits
// in the database before its answer, as with sync = "always"; concurrent
// commits share PostgreSQL's WAL flushes (group commit), which is what the
// batch mode buys on bbolt.
func auditWALPath(cfg *config.Config, log *slog.Logger) string {
	if cfg.Audit.Sync != config.SyncBatch {
		return ""
	}
	if cfg.Storage.Backend == config.BackendPostgres {
		log.Info(`audit sync = "batch" acts as "always" with the postgres backend: every event is committed in the shared database before its answer`)
		return ""
	}
	return cfg.Storage.Path + ".audit-wal"
}

// chainLocker holds local, then shared, for one key; unlock releases them
// in reverse. A failure to get shared (the database away, its lock_timeout,
// ctx) releases local and fails: no refresh without the cross-node lock.
type chainLocker struct {
	local, shared vault.Locker
}

func (c chainLocker) Lock(ctx context.Context, key string) (func(), error) {
	unlockLocal, err := c.local.Lock(ctx, key)
	if err != nil {
		return nil, err
	}
	unlockShared, err := c.shared.Lock(ctx, key)
	if err != nil {
		unlockLocal()
		return nil, err
	}
	return func() {
		unlockShared()
		unlockLocal()
	}, nil
}
