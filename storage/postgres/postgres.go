// Package postgres is a storage.Store on PostgreSQL, so that several vaultd
// nodes can share one database. It passes the shared suite
// (storage/storagetest) like storage/bolt and storage/inmem; the SQL of
// every method is in docs/architecture.md, "A PostgreSQL backend".
//
// Every write is one READ COMMITTED transaction: its state statement(s),
// then its audit event with the audit_meta row locked FOR UPDATE (the one
// chain across nodes; always the last lock taken), then COMMIT. A refused
// event, a failed statement or a cancelled context rolls it all back.
// Compare-and-swap is one UPDATE ... WHERE revision = $n. Integration and
// connect session statements are keyed by tenant and, as a second wall,
// run under row-level security with vaultd.tenant set for the transaction.
//
// Records are the JSON of bbolt ({"v":1,...}) in jsonb columns; audit
// events are text, byte-exact. The optional storage.Backuper is not
// implemented: an operator backs up PostgreSQL with its own tools
// (pg_dump).
//
// Failover: a read (Get*, List*, Find*, ScanAudit's chunks, AuditHead,
// AuditAnchor, Ping) runs READ ONLY and, if its connection is lost under
// it (the session ended, a socket cut), once more on another connection:
// it changed nothing, so running it again is safe. Writes are never
// retried: a COMMIT whose answer was lost may have committed, so the write
// answers ErrUnavailable and the caller's retry, or a compare-and-swap's
// revision check, sorts it out. For a refresh that rules out a retry here
// in any case: the rotated token's commit and the refresh lock decide
// which node's answer stands, and a blind replay could store a token the
// provider has already replaced.
//
// Errors map to the storage sentinels; a database that cannot be reached
// in time is ErrUnavailable. No error or log line carries the DSN or its
// password.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
)

// ErrUnavailable: the database could not be reached, or did not answer,
// within the configured timeouts. Retryable, unlike the storage sentinels.
var ErrUnavailable = errors.New("storage/postgres: database unavailable")

// ErrNotMigrated: the database has no vaultd schema yet, or an older one.
// `vaultctl init` creates or migrates it (Store.Migrate).
var ErrNotMigrated = errors.New("storage/postgres: the database schema is missing or older than this binary; run `vaultctl init`")

// Options tunes the pool and its timeouts; zero values take the defaults.
type Options struct {
	// MaxConns bounds the pool (default 16). Each refresh in flight holding
	// a lock pins one connection: size it for that.
	MaxConns int32
	// AcquireTimeout bounds the wait for a pooled connection, dialling a
	// new one included (default 5s).
	AcquireTimeout time.Duration
	// ConnectTimeout bounds one dial and startup (default 5s).
	ConnectTimeout time.Duration
	// StatementTimeout is the server's statement_timeout (default 30s).
	StatementTimeout time.Duration
	// LockTimeout is the server's lock_timeout (default 10s).
	LockTimeout time.Duration
	// IdleInTransactionTimeout is idle_in_transaction_session_timeout
	// (default 60s): a backstop for a hung client.
	IdleInTransactionTimeout time.Duration
	// ForMigration opens a database whose schema is missing or older, so
	// that Migrate can run (vaultctl init). A newer schema is refused anyway.
	ForMigration bool
	// Logger gets the migrations applied; nil discards.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxConns <= 0 {
		o.MaxConns = 16
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.AcquireTimeout, 5*time.Second)
	def(&o.ConnectTimeout, 5*time.Second)
	def(&o.StatementTimeout, 30*time.Second)
	def(&o.LockTimeout, 10*time.Second)
	def(&o.IdleInTransactionTimeout, 60*time.Second)
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// Store is a storage.Store on a pgx pool. Safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	o        Options
	password string // redacted from every error text
	closed   atomic.Bool
	close    sync.Once
	// txHook, set only by tests (export_test.go), runs inside every
	// transaction before its statements, with the backend's pid and
	// whether it is a read.
	txHook func(ctx context.Context, pid uint32, read bool)
}

var (
	_ storage.Store               = (*Store)(nil)
	_ storage.AuditPruner         = (*Store)(nil)
	_ storage.RevocationStore     = (*Store)(nil)
	_ storage.DeliveryStore       = (*Store)(nil)
	_ storage.AuditAnchorImporter = (*Store)(nil)
)

// Open connects to the database dsn names and checks its schema: a newer
// one is storage.ErrSchema, a missing or older one ErrNotMigrated (unless
// o.ForMigration). An unreachable database is ErrUnavailable.
func Open(ctx context.Context, dsn secret.String, o Options) (*Store, error) {
	o = o.withDefaults()
	cfg, err := pgxpool.ParseConfig(dsn.Reveal())
	if err != nil {
		// The parser's message may quote the DSN: say only that it failed.
		return nil, errors.New("storage/postgres: the DSN cannot be parsed (its text is not shown: it may hold a password)")
	}
	cfg.MaxConns = o.MaxConns
	cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	rp := cfg.ConnConfig.RuntimeParams
	rp["statement_timeout"] = strconv.FormatInt(o.StatementTimeout.Milliseconds(), 10)
	rp["lock_timeout"] = strconv.FormatInt(o.LockTimeout.Milliseconds(), 10)
	rp["idle_in_transaction_session_timeout"] = strconv.FormatInt(o.IdleInTransactionTimeout.Milliseconds(), 10)
	if _, ok := rp["application_name"]; !ok {
		rp["application_name"] = "vaultd"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, redact(err.Error(), cfg.ConnConfig.Password))
	}
	s := &Store{pool: pool, o: o, password: cfg.ConnConfig.Password}
	v, err := s.schemaVersion(ctx)
	switch {
	case err != nil:
	case v > SchemaVersion:
		err = fmt.Errorf("%w: the database is at schema version %d, this binary knows up to %d", storage.ErrSchema, v, SchemaVersion)
	case v < SchemaVersion && !o.ForMigration:
		err = fmt.Errorf("%w (schema version %d, want %d)", ErrNotMigrated, v, SchemaVersion)
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	if !o.ForMigration {
		s.warnIfRLSBypassed(ctx)
	}
	return s, nil
}

// warnIfRLSBypassed says loudly when vaultd's role skips row-level
// security (a superuser or BYPASSRLS role): every query is still keyed by
// tenant, but the second wall is down. A check that cannot run is logged
// too: it is advice to the operator, not a gate.
func (s *Store) warnIfRLSBypassed(ctx context.Context) {
	var bypass bool
	err := s.pool.QueryRow(ctx, `SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user`).Scan(&bypass)
	switch {
	case err != nil:
		s.o.Logger.Warn("postgres: could not check whether row-level security applies to this role", "err", redact(err.Error(), s.password))
	case bypass:
		s.o.Logger.Warn("postgres: vaultd's database role is a superuser or has BYPASSRLS: row-level security does not apply to it; use a role without them (docs/operations.md)")
	}
}

// Close closes the pool; later calls return nil, every other method then
// answers storage.ErrClosed.
func (s *Store) Close() error {
	s.close.Do(func() {
		s.closed.Store(true)
		s.pool.Close()
	})
	return nil
}

// Ping checks that the database answers and is at this binary's schema
// version (storage.ErrSchema otherwise).
func (s *Store) Ping(ctx context.Context) error {
	v, err := s.schemaVersion(ctx)
	if err != nil {
		return err
	}
	if v != SchemaVersion {
		return fmt.Errorf("%w: the database is at schema version %d, this binary at %d", storage.ErrSchema, v, SchemaVersion)
	}
	return nil
}

// schemaVersion reads max(version) of schema_migrations; 0 when the table
// does not exist yet.
func (s *Store) schemaVersion(ctx context.Context) (int, error) {
	var v *int32
	err := s.read(ctx, txOpts{readOnly: true}, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil || !exists {
			return err
		}
		return tx.QueryRow(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v)
	})
	if err != nil || v == nil {
		return 0, err
	}
	return int(*v), nil
}

// txOpts: tenant, when set, is the vaultd.tenant of row-level security;
// readOnly and repeatable choose the transaction's mode.
type txOpts struct {
	tenant     string
	readOnly   bool
	repeatable bool
}

// run runs fn in one transaction on a pooled connection and commits it;
// any error rolls it back and is mapped (mapErr). It never retries: a
// write whose connection dropped may have committed (the answer to COMMIT
// is what was lost), so only the caller can tell, by its own retry or a
// compare-and-swap's revision check.
func (s *Store) run(ctx context.Context, o txOpts, fn func(pgx.Tx) error) error {
	err, _ := s.runTx(ctx, o, fn)
	return err
}

// read runs fn in a READ ONLY transaction and, if the connection was lost
// under it (the server ended the session, a failover, a cut socket),
// once more on another pooled connection. A read-only transaction changes
// nothing whether or not its COMMIT arrived, so running it again is safe;
// fn must start over each time (reset what it collects). One retry only:
// a database that is really down answers ErrUnavailable, quickly.
func (s *Store) read(ctx context.Context, o txOpts, fn func(pgx.Tx) error) error {
	o.readOnly = true
	err, lost := s.runTx(ctx, o, fn)
	if lost {
		s.o.Logger.Debug("postgres: connection lost during a read; retrying once", "err", redact(err.Error(), s.password))
		err, _ = s.runTx(ctx, o, fn)
	}
	return err
}

// runTx is run; lost reports a connection lost after the transaction
// began (connLost) while the caller's context and the store are live.
func (s *Store) runTx(ctx context.Context, o txOpts, fn func(pgx.Tx) error) (error, bool) {
	if s.closed.Load() {
		return storage.ErrClosed, false
	}
	if err := ctx.Err(); err != nil {
		return err, false
	}
	conn, err := s.acquire(ctx)
	if err != nil {
		return err, false
	}
	defer conn.Release()
	to := pgx.TxOptions{IsoLevel: pgx.ReadCommitted}
	if o.repeatable {
		to.IsoLevel = pgx.RepeatableRead
	}
	if o.readOnly {
		to.AccessMode = pgx.ReadOnly
	}
	tx, err := conn.BeginTx(ctx, to)
	if err != nil {
		return s.mapErr(ctx, err), s.lost(ctx, err)
	}
	err = func() error {
		if o.tenant != "" {
			if _, err := tx.Exec(ctx, `SELECT set_config('vaultd.tenant', $1, true)`, o.tenant); err != nil {
				return err
			}
		}
		if s.txHook != nil {
			s.txHook(ctx, conn.Conn().PgConn().PID(), o.readOnly)
		}
		if err := fn(tx); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}()
	if err != nil {
		// Rollback on a context of its own: a cancelled caller must still
		// end the transaction (pgx closes the connection if it cannot).
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.o.AcquireTimeout)
		_ = tx.Rollback(rctx)
		cancel()
		return s.mapErr(ctx, err), s.lost(ctx, err)
	}
	return nil, false
}

// lost reports whether err is the connection going away under a
// transaction (not a timeout: retrying a slow server only doubles the
// wait; not the caller's cancellation, nor a closed store).
func (s *Store) lost(ctx context.Context, err error) bool {
	if ctx.Err() != nil || s.closed.Load() || isStorageErr(err) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// admin_shutdown (pg_terminate_backend, a fast shutdown) and
		// crash_shutdown end the session.
		return pe.Code == "57P01" || pe.Code == "57P02"
	}
	if pgconn.Timeout(err) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return ne != nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "conn closed")
}

// acquire takes a pooled connection within AcquireTimeout.
func (s *Store) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, s.o.AcquireTimeout)
	defer cancel()
	conn, err := s.pool.Acquire(actx)
	if err != nil {
		if ctx.Err() == nil && actx.Err() != nil {
			return nil, fmt.Errorf("%w: no connection within %s", ErrUnavailable, s.o.AcquireTimeout)
		}
		return nil, s.mapErr(ctx, err)
	}
	return conn, nil
}

// redact removes the password from an error's text.
func redact(msg, password string) string {
	if password != "" {
		msg = strings.ReplaceAll(msg, password, secret.Redacted)
	}
	return msg
}

// mapErr turns a pgx or server error into a storage sentinel (or
// ErrUnavailable, or the context's error), with the password redacted;
// errors this package or an AuditFunc made pass unchanged.
func (s *Store) mapErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && !isStorageErr(err) {
		return fmt.Errorf("storage/postgres: %w", ctx.Err())
	}
	if s.closed.Load() && !isStorageErr(err) {
		return storage.ErrClosed
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		msg := redact(pe.Message, s.password)
		switch pe.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%w: %s", storage.ErrExists, msg)
		case "23503": // foreign_key_violation: a row's tenant is gone
			return fmt.Errorf("%w: %s", storage.ErrTenantNotFound, msg)
		case "25006": // read_only_sql_transaction: a standby
			return fmt.Errorf("%w: %s", storage.ErrReadOnly, msg)
		case "42P01", "42703": // undefined table or column
			return fmt.Errorf("%w: %s (SQLSTATE %s)", storage.ErrSchema, msg, pe.Code)
		case "57014", "55P03", "57P01", "57P02", "57P03", "53300", "40001", "40P01":
			// statement or lock timeout, shutdown, too many connections,
			// serialization failure, deadlock: transient.
			return fmt.Errorf("%w: %s (SQLSTATE %s)", ErrUnavailable, msg, pe.Code)
		}
		return fmt.Errorf("storage/postgres: %s (SQLSTATE %s)", msg, pe.Code)
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	if errors.As(err, &ce) || errors.As(err, &ne) || pgconn.Timeout(err) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), "conn closed") {
		return fmt.Errorf("%w: %s", ErrUnavailable, redact(err.Error(), s.password))
	}
	return err
}

func isStorageErr(err error) bool {
	for _, e := range []error{storage.ErrNotFound, storage.ErrTenantNotFound, storage.ErrExists, storage.ErrConflict,
		storage.ErrInvalidID, storage.ErrClosed, storage.ErrSchema, storage.ErrCorrupt, storage.ErrReadOnly,
		storage.ErrInvalidRecord, ErrUnavailable, ErrNotMigrated} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
