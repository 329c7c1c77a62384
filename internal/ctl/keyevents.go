package ctl

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/config"
)

// recordKeyEvents records key.create for keys vaultctl created in the
// HSM. With the database free it opens it and appends the events through
// an audit.Log, as vaultd would (the chain's tail verified first, a WAL a
// crashed vaultd left replayed first, events an earlier run left pending
// first); the mirror file is vaultd's to write and catches up at its next
// start. With the database held by a running vaultd it leaves them in the
// pending file beside it (audit.PendingPath), which vaultd records on
// SIGHUP or at its next start. It returns what it did, for the operator.
// pub is the audit checkpoint key when known (nil: the chain is checked
// without signatures).
func recordKeyEvents(ctx context.Context, cfg *config.Config, evs []audit.KeyCreated, pub crypto.PublicKey, log *slog.Logger) (string, error) {
	if len(evs) == 0 {
		return "", nil
	}
	if cfg.Storage.Backend == config.BackendPostgres {
		return recordKeyEventsPostgres(ctx, cfg, evs, pub, log)
	}
	dbPath := cfg.Storage.Path
	st, err := bolt.Open(ctx, dbPath, bolt.Options{LockTimeout: cfg.Storage.LockTimeout.Duration(), Logger: log})
	if errors.Is(err, storage.ErrLocked) {
		pending := audit.PendingPath(dbPath)
		if err := audit.AppendPending(pending, evs); err != nil {
			return "", err
		}
		ownLike(pending, dbPath)
		return fmt.Sprintf("key.create: vaultd holds the database; %d event(s) left in %s for it to record (systemctl reload vaultd)", len(evs), pending), nil
	}
	if err != nil {
		return "", err
	}
	defer st.Close()
	walPath := ""
	if cfg.Audit.Sync == config.SyncBatch {
		// Only an existing WAL: creating one here would leave a file
		// vaultd (another user) might not open.
		if p := dbPath + ".audit-wal"; exists(p) {
			walPath = p
		}
	}
	l, err := audit.New(ctx, st, audit.Options{Logger: log, VerifyOnStart: cfg.Audit.VerifyOnStart, CheckpointKey: pub, WALPath: walPath})
	if err != nil {
		return "", fmt.Errorf("audit trail: %w", err)
	}
	if _, err := l.RecordPending(ctx, audit.PendingPath(dbPath)); err != nil {
		_ = l.Close()
		return "", err
	}
	for _, k := range evs {
		if _, err := l.Record(ctx, k.Event()); err != nil {
			_ = l.Close()
			return "", fmt.Errorf("audit key.create: %w", err)
		}
	}
	if err := l.Close(); err != nil {
		return "", err
	}
	return fmt.Sprintf("key.create: %d event(s) recorded in the audit trail", len(evs)), nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return !errors.Is(err, fs.ErrNotExist)
}

// ownLike gives the pending file the database's owner, so vaultd (its
// own user) can read and remove what vaultctl run as root wrote. Only
// root can; anyone else is that owner already or vaultd's group admin.
func ownLike(path, dbPath string) {
	fi, err := os.Stat(dbPath)
	if err != nil {
		fi, err = os.Stat(filepath.Dir(dbPath))
	}
	if err != nil {
		return
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		_ = os.Lchown(path, int(st.Uid), int(st.Gid))
	}
}
