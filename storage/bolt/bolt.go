package bolt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/vaultd/vaultd/storage"
)

// DefaultLockTimeout is how long Open waits for another process to release
// the file lock before answering storage.ErrLocked.
const DefaultLockTimeout = time.Second

// FileMode is the mode a new database file is created with.
const FileMode fs.FileMode = 0o600

// Options configure Open.
type Options struct {
	// LockTimeout bounds the wait for the file lock (default 1s).
	LockTimeout time.Duration
	// Logger receives open/migration events; nil discards them.
	Logger *slog.Logger
	// NoSync skips fsync on commit. Only for tests and benchmarks: a crash
	// may then lose acknowledged writes or corrupt the file.
	NoSync bool
	// ReadOnly opens with a shared lock; every write answers
	// storage.ErrReadOnly. The file must exist and be at the current schema.
	ReadOnly bool
	// MaxBatchDelay is how long a write waits for others to join its
	// batch when other writes are in flight (default 2ms; a write with no
	// concurrent writer commits at once). Larger values trade latency for
	// fewer fsyncs under load.
	MaxBatchDelay time.Duration
}

// DefaultMaxBatchDelay: well under a request's latency budget, long enough
// to gather the writers that arrive during one fsync.
const DefaultMaxBatchDelay = 2 * time.Millisecond

// Store is a storage.Store on one bbolt file. Safe for concurrent use.
type Store struct {
	db       *bbolt.DB
	path     string
	log      *slog.Logger
	readOnly bool
	schema   uint64 // version the file was migrated to at open
	inflight atomic.Int64

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var (
	_ storage.Store           = (*Store)(nil)
	_ storage.AuditPruner     = (*Store)(nil)
	_ storage.Backuper        = (*Store)(nil)
	_ storage.RevocationStore = (*Store)(nil)
	_ storage.DeliveryStore   = (*Store)(nil)
)

// LockedError is the error Open returns when another process holds the
// file. It wraps storage.ErrLocked.
type LockedError struct{ Path string }

func (e *LockedError) Error() string {
	return fmt.Sprintf("storage: %s is locked by another process (is another vaultd running?)", e.Path)
}

func (e *LockedError) Unwrap() error { return storage.ErrLocked }

// Open opens (or, unless opts.ReadOnly, creates with mode 0600) the
// database at path, takes the file lock, and migrates the schema to the
// current version. The directory must already exist: a missing directory
// usually means a wrong path, which should not silently become a new,
// empty vault.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	return open(ctx, path, opts, migrations)
}

func open(ctx context.Context, path string, opts Options, ms []migration) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if path == "" {
		return nil, errors.New("storage: empty database path")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("storage: open %s: directory %s does not exist: %w", path, dir, err)
		}
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("storage: open %s: %s is not a directory", path, dir)
	}
	if err := preflight(path); err != nil {
		return nil, err
	}
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	db, err := bbolt.Open(path, FileMode, &bbolt.Options{
		Timeout:  timeout,
		NoSync:   opts.NoSync,
		ReadOnly: opts.ReadOnly,
	})
	if err != nil {
		switch {
		case errors.Is(err, bberrors.ErrTimeout):
			return nil, &LockedError{Path: path}
		case errors.Is(err, bberrors.ErrInvalid), errors.Is(err, bberrors.ErrVersionMismatch),
			errors.Is(err, bberrors.ErrChecksum):
			return nil, fmt.Errorf("%w: %s is not a valid vaultd database: %v", storage.ErrCorrupt, path, err)
		}
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// Records are encrypted, but ids, metadata and wrapped DEKs are not
		// for other local users to read.
		log.Warn("storage: database file is accessible to group/other; expected 0600",
			"path", path, "mode", fi.Mode().Perm().String())
	}
	from, to, err := migrate(ctx, db, ms, opts.ReadOnly)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	s := &Store{db: db, path: path, log: log, readOnly: opts.ReadOnly, schema: to}
	db.MaxBatchDelay = DefaultMaxBatchDelay
	if opts.MaxBatchDelay > 0 {
		db.MaxBatchDelay = opts.MaxBatchDelay
	}
	if from != to {
		log.Info("storage: schema migrated", "path", path, "from", from, "to", to)
	}
	log.Info("storage: opened", "path", path, "schema_version", to, "read_only", opts.ReadOnly, "no_sync", opts.NoSync)
	return s, nil
}

// Path is the database file's path.
func (s *Store) Path() string { return s.path }

// Close releases the file; it waits for running transactions. Later calls
// return nil; every other method then answers storage.ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

func (s *Store) usable(ctx context.Context) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	return ctx.Err()
}

// mapErr turns bbolt's state errors into storage sentinels.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bberrors.ErrDatabaseNotOpen):
		return storage.ErrClosed
	case errors.Is(err, bberrors.ErrDatabaseReadOnly), errors.Is(err, bberrors.ErrTxNotWritable):
		return storage.ErrReadOnly
	}
	return err
}

// rejection marks a write that failed before it modified the transaction:
// write reports it to its caller but lets the rest of the batch commit.
type rejection struct{ err error }

func (r rejection) Error() string { return r.err.Error() }

func reject(err error) error { return rejection{err} }

// errRollback makes a solo transaction roll back after a rejection.
var errRollback = errors.New("storage: rollback")

// write runs fn in a write transaction and returns once it is committed.
// When other writes are in flight it goes through db.Batch, so they share
// one transaction and one fsync; a lone write commits at once rather than
// wait MaxBatchDelay for company that is not coming.
//
// fn must return reject(err) for failures detected before any
// modification (the rest of a batch then commits normally) and a plain
// error otherwise (the batch is rolled back and the others re-run
// without it). fn may run several times, so it must set its outputs
// afresh on every run.
func (s *Store) write(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	if s.readOnly {
		return storage.ErrReadOnly
	}
	solo := s.inflight.Add(1) == 1
	defer s.inflight.Add(-1)
	var rejected error
	var err error
	if solo {
		err = s.db.Update(func(tx *bbolt.Tx) error {
			rejected = nil
			if err := ctx.Err(); err != nil {
				rejected = err
				return errRollback
			}
			err := fn(tx)
			if r, ok := err.(rejection); ok {
				rejected = r.err
				return errRollback // nothing to commit: skip the fsync
			}
			return err
		})
		if err == errRollback {
			return rejected
		}
	} else {
		err = s.db.Batch(func(tx *bbolt.Tx) error {
			rejected = nil
			if err := ctx.Err(); err != nil {
				rejected = err
				return nil
			}
			err := fn(tx)
			if r, ok := err.(rejection); ok {
				rejected = r.err
				return nil
			}
			return err
		})
	}
	if err != nil {
		return mapErr(err)
	}
	return rejected
}

// read runs fn in a read transaction.
func (s *Store) read(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	return mapErr(s.db.View(fn))
}

// Ping checks that a read transaction can be opened and the file carries
// the expected layout.
func (s *Store) Ping(ctx context.Context) error {
	return s.read(ctx, func(tx *bbolt.Tx) error {
		v, err := readSchemaVersion(tx)
		if err != nil {
			return err
		}
		if v != s.schema {
			return fmt.Errorf("%w: schema version %d, want %d", storage.ErrSchema, v, s.schema)
		}
		if tx.Bucket(bucketAudit) == nil {
			return fmt.Errorf("%w: audit bucket missing", storage.ErrCorrupt)
		}
		return nil
	})
}

// maxCheckErrors bounds how many consistency errors Check reports.
const maxCheckErrors = 10

// Check runs bbolt's page-level consistency check (every page reachable or
// free, no double use). It holds a write transaction for its duration so
// concurrent writers cannot change pages under it; it never commits.
func (s *Store) Check(ctx context.Context) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	var tx *bbolt.Tx
	var err error
	if s.readOnly {
		tx, err = s.db.Begin(false)
	} else {
		tx, err = s.db.Begin(true)
	}
	if err != nil {
		return mapErr(err)
	}
	defer func() { _ = tx.Rollback() }()
	var errs []error
	for e := range tx.Check() {
		// Drain fully: the checker goroutine blocks until read.
		if len(errs) < maxCheckErrors {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: consistency check of %s failed: %w", storage.ErrCorrupt, s.path, errors.Join(errs...))
	}
	return ctx.Err()
}
