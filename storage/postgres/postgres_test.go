package postgres_test

import (
	"testing"

	"github.com/vaultd/vaultd/internal/pgtest"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/postgres"
	"github.com/vaultd/vaultd/storage/storagetest"
)

// openNew opens a migrated store on a fresh database.
func openNew(t *testing.T, o postgres.Options) (*postgres.Store, pgtest.Database) {
	t.Helper()
	db := pgtest.New(t)
	o.ForMigration = true
	s, err := postgres.Open(t.Context(), db.DSN, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s, db
}

func TestStoreSuite(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s, _ := openNew(t, postgres.Options{})
		return s
	})
}

// TestNoBackuper: PostgreSQL is backed up with its own tools; the store
// does not claim the capability.
func TestNoBackuper(t *testing.T) {
	var s storage.Store = &postgres.Store{}
	if _, ok := s.(storage.Backuper); ok {
		t.Fatal("*postgres.Store is a storage.Backuper; the docs say operators use pg_dump")
	}
}
