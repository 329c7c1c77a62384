package ctl

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"log/slog"

	"github.com/vaultd/vaultd/storage/postgres"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/config"
)

// openPostgres opens the shared store [storage] names (forMigration: a
// missing or older schema is accepted, for init to migrate).
func openPostgres(ctx context.Context, cfg *config.Config, forMigration bool, log *slog.Logger) (*postgres.Store, error) {
	dsn, err := cfg.Storage.LoadDSN()
	if err != nil {
		return nil, err
	}
	st, err := postgres.Open(ctx, dsn, postgres.Options{ForMigration: forMigration, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return st, nil
}

// initPostgres creates or migrates the schema. Migrate is versioned and
// idempotent, and serialised in the database, so running init on several
// hosts at once is safe.
func initPostgres(ctx context.Context, cfg *config.Config, stdout io.Writer, log *slog.Logger) error {
	st, err := openPostgres(ctx, cfg, true, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return fmt.Errorf("postgres: schema: %w", err)
	}
	if err := st.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	fmt.Fprintf(stdout, "PostgreSQL schema at version %d (created or migrated as needed)\n", postgres.SchemaVersion)
	return nil
}

// recordKeyEventsPostgres appends key.create events to the shared trail.
// PostgreSQL has no file lock: vaultctl appends beside running nodes, the
// chain's row lock ordering it with theirs, so no pending file is needed.
func recordKeyEventsPostgres(ctx context.Context, cfg *config.Config, evs []audit.KeyCreated, pub crypto.PublicKey, log *slog.Logger) (string, error) {
	st, err := openPostgres(ctx, cfg, false, log)
	if err != nil {
		return "", err
	}
	defer st.Close()
	l, err := audit.New(ctx, st, audit.Options{Logger: log, VerifyOnStart: cfg.Audit.VerifyOnStart, CheckpointKey: pub})
	if err != nil {
		return "", fmt.Errorf("audit trail: %w", err)
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
