package ctl

import (
	"bytes"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
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
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "vault.db")
	st, err := bolt.Open(ctx, path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"acme", "globex"} {
		if _, err := storagetest.NoEvent(st).CreateTenant(ctx, storagetest.NewTenant(id)); err != nil {
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
	ctx := t.Context()
	t.Run("valid", func(t *testing.T) {
		sum, err := verifyBackup(ctx, newBackupSource(t))
		if err != nil {
			t.Fatal(err)
		}
		if sum.tenants != 2 || sum.events != 5 || sum.lastSeq != 5 {
			t.Fatalf("summary %+v", sum)
		}
	})
	// Retention pruned the oldest events: the chain starts at the anchor
	// the database keeps, and a wrong anchor is refused.
	t.Run("pruned", func(t *testing.T) {
		path := newBackupSource(t)
		st, err := bolt.Open(ctx, path, bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := st.PruneAudit(ctx, 3, 10); err != nil || n != 3 {
			t.Fatalf("PruneAudit: %d, %v", n, err)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		sum, err := verifyBackup(ctx, path)
		if err != nil || sum.events != 2 || sum.lastSeq != 5 {
			t.Fatalf("pruned backup: %+v, %v", sum, err)
		}
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bbolt.Tx) error {
			sys := tx.Bucket([]byte("sys"))
			return sys.Put([]byte("audit_anchor"), []byte(`{"v":1,"seq":3,"hash":"`+strings.Repeat("ab", 32)+`"}`))
		})
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verifyBackup(ctx, path); err == nil || !strings.Contains(err.Error(), "audit chain") {
			t.Fatalf("pruned backup with a wrong anchor: %v", err)
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

// A backup that fails (here: a stream without the trailers that vouch for
// it) leaves nothing behind: no target file, no .partial file.
func TestBackupFailureLeavesNothing(t *testing.T) {
	data := bytes.Repeat([]byte("not a whole backup "), 500)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Vaultd-Backup-Size, X-Vaultd-Backup-Sha256")
		_, _ = w.Write(data) // and no trailers
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	backups := filepath.Join(dir, "backups")
	if err := os.Mkdir(backups, 0o700); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(backups, "vault.db")
	var stdout, stderr bytes.Buffer
	err := cmdBackup(t.Context(), []string{"-server", srv.URL, "-ca", ca, "-out", out}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("backup of a stream without trailers: %v", err)
	}
	if ents, _ := os.ReadDir(backups); len(ents) != 0 {
		t.Fatalf("failed backup left %d file(s), e.g. %s", len(ents), ents[0].Name())
	}
}
