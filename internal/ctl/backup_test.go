package ctl

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/storage/storagetest"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// newBackupSource makes a real vaultd database with two tenants and a
// chained audit trail, closed, and returns its path.
func newBackupSource(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "vault.db")
	st, err := bolt.Open(ctx, path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"acme", "globex"} {
		if _, err := st.CreateTenant(ctx, storagetest.NewTenant(id)); err != nil {
			t.Fatal(err)
		}
	}
	log, err := audit.New(ctx, st, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := log.Record(ctx, audit.Event{TenantID: "acme", Actor: "t", Action: audit.ActionTenantRead, Outcome: audit.OutcomeSuccess, HTTPStatus: 200 + i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVerifyBackup(t *testing.T) {
	ctx := context.Background()
	t.Run("valid", func(t *testing.T) {
		sum, err := verifyBackup(ctx, newBackupSource(t))
		if err != nil {
			t.Fatal(err)
		}
		if sum.tenants != 2 || sum.events != 5 || sum.lastSeq != 5 {
			t.Fatalf("summary %+v", sum)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		path := newBackupSource(t)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b[:len(b)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := verifyBackup(ctx, path); err == nil || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("half a database: %v, want a truncation error", err)
		}
	})
	t.Run("not_a_database", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "x.db")
		if err := os.WriteFile(path, bytes.Repeat([]byte("not bbolt"), 1000), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := verifyBackup(ctx, path); err == nil {
			t.Fatal("garbage accepted as a backup")
		}
	})
	t.Run("tampered_audit", func(t *testing.T) {
		path := newBackupSource(t)
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bbolt.Tx) error {
			b := tx.Bucket([]byte("audit"))
			k, v := b.Cursor().First()
			return b.Put(bytes.Clone(k), bytes.Replace(v, []byte(`"acme"`), []byte(`"evil"`), 1))
		})
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verifyBackup(ctx, path); err == nil || !strings.Contains(err.Error(), "audit chain") {
			t.Fatalf("tampered trail: %v", err)
		}
	})
}
