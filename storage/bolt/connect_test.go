package bolt

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/storagetest"
)

// TestConnectLayout: sessions sit in t/<tenant>/connect as v1 records, the
// digest index maps each digest to <tenant>/<id>, and nothing in the file
// holds a secret the session only keeps digests or ciphertext of.
func TestConnectLayout(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	cs := storagetest.NewConnectSession("acme", "cs-1")
	cs.StateHash = storagetest.Digest("the-oauth-state")
	if _, err := storagetest.NoEvent(s).CreateConnectSession(ctx, cs); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	rawView(t, path, func(tx *bbolt.Tx) error {
		cb := tx.Bucket([]byte("t/acme")).Bucket([]byte("connect"))
		if cb == nil {
			t.Fatal("no connect bucket in the tenant's bucket")
		}
		if v := cb.Get([]byte("cs-1")); !bytes.HasPrefix(v, []byte(`{"v":1,"id":"cs-1","tenant_id":"acme",`)) {
			t.Errorf("session record = %.60s", v)
		}
		idx := tx.Bucket([]byte("connect_digests"))
		if idx == nil {
			t.Fatal("no connect_digests bucket")
		}
		n := 0
		_ = idx.ForEach(func(k, v []byte) error {
			n++
			if !bytes.Equal(k, cs.LinkHash) && !bytes.Equal(k, cs.StateHash) {
				t.Errorf("unexpected index key %x", k)
			}
			if string(v) != "acme/cs-1" {
				t.Errorf("index value %q, want acme/cs-1", v)
			}
			return nil
		})
		if n != 2 {
			t.Errorf("%d index entries, want 2 (link and state; the browser digest is not indexed)", n)
		}
		return nil
	})
}

// TestConnectOnOldFile: a file written before connect sessions (no
// connect buckets) opens read-only and read-write at the same schema
// version, reads as having no sessions, and gets the buckets on the first
// session write.
func TestConnectOnOldFile(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	if _, err := storagetest.NoEvent(s).PutIntegration(ctx, "acme", storagetest.NewIntegration("acme", "crm", 32)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	rawView(t, path, func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketConnectIndex) != nil || tx.Bucket([]byte("t/acme")).Bucket(bucketConnect) != nil {
			t.Error("connect buckets created without a session write")
		}
		return nil
	})

	r := openT(t, path, Options{ReadOnly: true})
	if l, err := r.ListConnectSessions(ctx, "acme"); err != nil || len(l) != 0 {
		t.Fatalf("List on an old file: %d, %v", len(l), err)
	}
	if _, err := r.GetConnectSession(ctx, "acme", "cs-1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get on an old file: %v", err)
	}
	if _, err := r.FindConnectSession(ctx, storagetest.Digest("x")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Find on an old file: %v", err)
	}
	// Read-only refuses every session write.
	cs := storagetest.NewConnectSession("acme", "cs-1")
	if _, err := storagetest.NoEvent(r).CreateConnectSession(ctx, cs); !errors.Is(err, storage.ErrReadOnly) {
		t.Fatalf("Create on a read-only store: %v", err)
	}
	cs.Revision = 1
	if _, err := storagetest.NoEvent(r).UpdateConnectSession(ctx, cs); !errors.Is(err, storage.ErrReadOnly) {
		t.Fatalf("Update on a read-only store: %v", err)
	}
	if _, _, err := storagetest.NoEvent(r).CompleteConnectSession(ctx, cs, storagetest.NewIntegration("acme", cs.IntegrationID, 16)); !errors.Is(err, storage.ErrReadOnly) {
		t.Fatalf("Complete on a read-only store: %v", err)
	}
	if err := storagetest.NoEvent(r).DeleteConnectSession(ctx, "acme", "cs-1"); !errors.Is(err, storage.ErrReadOnly) {
		t.Fatalf("Delete on a read-only store: %v", err)
	}
	_ = r.Close()

	w := openT(t, path, Options{})
	if w.schema != SchemaVersion {
		t.Fatalf("schema %d, want %d (connect sessions need no migration)", w.schema, SchemaVersion)
	}
	cs.Revision = 0
	if _, err := storagetest.NoEvent(w).CreateConnectSession(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if got, err := w.FindConnectSession(ctx, cs.LinkHash); err != nil || got.ID != "cs-1" {
		t.Fatalf("Find after the first session write: %+v %v", got, err)
	}
	if err := w.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestConnectBackup: a snapshot carries the sessions and their index.
func TestConnectBackup(t *testing.T) {
	ctx := t.Context()
	s := openT(t, newPath(t), Options{})
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	cs, err := storagetest.NoEvent(s).CreateConnectSession(ctx, storagetest.NewConnectSession("acme", "cs-1"))
	if err != nil {
		t.Fatal(err)
	}
	bk := filepath.Join(t.TempDir(), "backup.db")
	if _, err := s.BackupToFile(ctx, bk); err != nil {
		t.Fatal(err)
	}
	b := openT(t, bk, Options{ReadOnly: true})
	got, err := b.FindConnectSession(ctx, cs.LinkHash)
	if err != nil || !storagetest.EqualConnectSession(got, cs) {
		t.Fatalf("session in the backup: %+v %v", got, err)
	}
}

// TestCorruptConnect: a damaged session record or index entry is
// reported as storage.ErrCorrupt, never as a missing or foreign session,
// and writes refuse to build on it.
func TestCorruptConnect(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	for _, id := range []string{"acme", "other"} {
		if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant(id)); err != nil {
			t.Fatal(err)
		}
	}
	good, err := storagetest.NoEvent(s).CreateConnectSession(ctx, storagetest.NewConnectSession("acme", "good"))
	if err != nil {
		t.Fatal(err)
	}
	bad, err := storagetest.NoEvent(s).CreateConnectSession(ctx, storagetest.NewConnectSession("acme", "bad"))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	dangling := storagetest.Digest("dangling")
	foreign := storagetest.Digest("foreign")
	garbled := storagetest.Digest("garbled")
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		cb := tx.Bucket([]byte("t/acme")).Bucket(bucketConnect)
		if err := cb.Put([]byte("bad"), []byte(`{"v":1,"id":"bad","tenant_id":"acme","scopes":"nope"}`)); err != nil {
			return err
		}
		// Filed under the wrong id.
		val, _ := encodeConnectSession(good)
		if err := cb.Put([]byte("moved"), val); err != nil {
			return err
		}
		idx := tx.Bucket(bucketConnectIndex)
		for k, v := range map[string]string{
			string(dangling): "other/nobody",
			string(foreign):  "acme/good", // good does not carry this digest
			string(garbled):  "no-slash",
		} {
			if err := idx.Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	s = openT(t, path, Options{})
	wantCorrupt := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, storage.ErrCorrupt) {
			t.Fatalf("%s: %v, want ErrCorrupt", what, err)
		}
		if strings.Contains(err.Error(), string(dangling)) {
			t.Fatalf("%s: error echoes a digest", what)
		}
	}
	_, err = s.GetConnectSession(ctx, "acme", "bad")
	wantCorrupt("Get of a garbled record", err)
	_, err = s.GetConnectSession(ctx, "acme", "moved")
	wantCorrupt("Get of a misfiled record", err)
	_, err = s.ListConnectSessions(ctx, "acme")
	wantCorrupt("List with a garbled record", err)
	_, err = s.FindConnectSession(ctx, bad.LinkHash)
	wantCorrupt("Find of a garbled record", err)
	for name, d := range map[string][]byte{"dangling": dangling, "foreign": foreign, "garbled": garbled} {
		_, err = s.FindConnectSession(ctx, d)
		wantCorrupt("Find by a "+name+" index entry", err)
	}
	_, err = storagetest.NoEvent(s).UpdateConnectSession(ctx, bad)
	wantCorrupt("Update of a garbled record", err)
	wantCorrupt("Delete of a garbled record", storagetest.NoEvent(s).DeleteConnectSession(ctx, "acme", "bad"))
	// The good session still works.
	if got, err := s.FindConnectSession(ctx, good.LinkHash); err != nil || got.ID != "good" {
		t.Fatalf("Find good: %+v %v", got, err)
	}
}

// FuzzDecodeConnectSession: no input makes the decoder panic, and
// whatever decodes re-encodes to something that decodes to the same record.
func FuzzDecodeConnectSession(f *testing.F) {
	good, _ := encodeConnectSession(storagetest.NewConnectSession("acme", "cs-1"))
	f.Add(good)
	f.Add([]byte(`{"v":1,"id":"cs-1","tenant_id":"acme"}`))
	f.Add([]byte(`{"v":1,"id":"cs-1","tenant_id":"acme","params":{"a":1}}`))
	f.Add([]byte(`{"v":1,"id":"cs-1","tenant_id":"acme","link_hash":"!!"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cs, err := decodeConnectSession("acme", "cs-1", data)
		if err != nil {
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("decode error without ErrCorrupt: %v", err)
			}
			return
		}
		enc, err := encodeConnectSession(cs)
		if err != nil {
			return // e.g. a time outside what JSON can carry
		}
		again, err := decodeConnectSession("acme", "cs-1", enc)
		if err != nil || !storagetest.EqualConnectSession(cs, again) {
			t.Fatalf("round trip changed the record: %v", err)
		}
	})
}

// FuzzDecodeSessionRef: an index value decodes only to two valid ids,
// which encode back to the same bytes.
func FuzzDecodeSessionRef(f *testing.F) {
	for _, s := range []string{"acme/cs-1", "acme", "/cs-1", "acme/", "a/b/c", "../x", "acme/cs 1", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ref, err := decodeSessionRef(data)
		if err != nil {
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("decode error without ErrCorrupt: %v", err)
			}
			return
		}
		if !storage.ValidID(ref.tenantID) || !storage.ValidID(ref.id) || !bytes.Equal(ref.encode(), data) {
			t.Fatalf("decoded %q to %+v", data, ref)
		}
	})
}
