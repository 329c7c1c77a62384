package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/vaultd/vaultd/storage"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one embedded SQL file, NNNN_name.sql, applied once.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations are the embedded files in version order; init panics on a
// malformed name or a gap (a build defect, not a runtime condition).
var migrations = mustMigrations()

// SchemaVersion is the schema this binary writes: its newest migration.
var SchemaVersion = migrations[len(migrations)-1].version

// migrateLockKey names the advisory lock Migrate holds, so two nodes (or
// two vaultctl init runs) migrating at once take turns.
const migrateLockKey = "vaultd/migrate"

// ParseMigrationName reads the version of a migration file name:
// "0001_init.sql" is 1. The version is 1 to 9999 digits-only, the name
// after the underscore lower-case [a-z0-9_] and not empty.
func ParseMigrationName(name string) (int, error) {
	base, ok := strings.CutSuffix(name, ".sql")
	if !ok {
		return 0, fmt.Errorf("migration %q: not a .sql file", name)
	}
	num, rest, ok := strings.Cut(base, "_")
	if !ok || len(num) != 4 || rest == "" {
		return 0, fmt.Errorf("migration %q: want NNNN_name.sql", name)
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("migration %q: version %q is not digits", name, num)
		}
	}
	for _, c := range rest {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return 0, fmt.Errorf("migration %q: name %q is not [a-z0-9_]", name, rest)
		}
	}
	v, err := strconv.Atoi(num)
	if err != nil || v < 1 {
		return 0, fmt.Errorf("migration %q: version must be at least 1", name)
	}
	return v, nil
}

func mustMigrations() []migration {
	ents, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		panic(err)
	}
	var out []migration
	for _, e := range ents {
		v, err := ParseMigrationName(e.Name())
		if err != nil {
			panic(err)
		}
		b, err := migrationFS.ReadFile("migrations/" + e.Name())
		if err != nil {
			panic(err)
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			panic(fmt.Sprintf("storage/postgres: migration %s: want version %d", m.name, i+1))
		}
	}
	if len(out) == 0 {
		panic("storage/postgres: no migrations embedded")
	}
	return out
}

// Migrate creates the schema or brings it to SchemaVersion: each missing
// migration in its own transaction (PostgreSQL DDL is transactional),
// recorded in schema_migrations, all under a session advisory lock so that
// concurrent runs apply each migration once. Idempotent. A database newer
// than this binary is storage.ErrSchema. It needs a role allowed DDL.
func (s *Store) Migrate(ctx context.Context) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	pc, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	// A connection of its own, closed at the end: its session settings
	// (no statement or lock timeout while waiting for another migrator)
	// and its advisory lock never go back to the pool.
	conn := pc.Hijack()
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if err := s.migrate(ctx, conn); err != nil {
		return s.mapErr(ctx, err)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context, conn *pgx.Conn) error {
	// The wait for another migrator is bounded by ctx, not the timeouts
	// meant for ordinary statements.
	if _, err := conn.Exec(ctx, `SET statement_timeout = 0; SET lock_timeout = 0`); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended($1, 0))`, migrateLockKey); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	var cur *int32
	if err := conn.QueryRow(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&cur); err != nil {
		return err
	}
	have := 0
	if cur != nil {
		have = int(*cur)
	}
	if have > SchemaVersion {
		return fmt.Errorf("%w: the database is at schema version %d, this binary knows up to %d", storage.ErrSchema, have, SchemaVersion)
	}
	for _, m := range migrations[have:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, m.version)
			return err
		})
		if err != nil {
			return err
		}
		s.o.Logger.InfoContext(ctx, "storage/postgres: schema migrated", "version", m.version, "migration", m.name)
	}
	_, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, migrateLockKey)
	return err
}
