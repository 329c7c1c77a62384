package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/storagetest"
)

// TestMigrateV0: a hand-crafted version-0 file (tenant buckets, no sys
// bucket) is upgraded in place and its records stay readable.
func TestMigrateV0(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	tenant, _ := encodeTenant(func() storage.Tenant { x := storagetest.NewTenant("acme"); x.Revision = 1; return x }())
	rec, _ := encodeIntegration(func() storage.Integration {
		x := storagetest.NewIntegration("acme", "crm", 256)
		x.Revision = 3
		return x
	}())
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		tb, err := tx.CreateBucket([]byte("t/acme"))
		if err != nil {
			return err
		}
		if err := tb.Put([]byte("tenant"), tenant); err != nil {
			return err
		}
		ib, err := tb.CreateBucket([]byte("integrations"))
		if err != nil {
			return err
		}
		return ib.Put([]byte("crm"), rec)
	})

	// Read-only cannot migrate.
	if _, err := Open(ctx, path, Options{ReadOnly: true}); !errors.Is(err, storage.ErrSchema) {
		t.Fatalf("read-only Open of a v0 file: %v, want ErrSchema", err)
	}

	s := openT(t, path, Options{})
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetIntegration(ctx, "acme", "crm")
	if err != nil || got.Revision != 3 {
		t.Fatalf("record after migration: rev %d, %v", got.Revision, err)
	}
	head, err := s.AuditHead(ctx)
	if err != nil || head.Seq != 0 || head.Hash != storage.GenesisHash {
		t.Fatalf("audit head after migration: %+v %v", head, err)
	}
	if _, err := s.AppendAudit(ctx, storagetest.ChainBuilder(`"action":"x"`)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	rawView(t, path, func(tx *bbolt.Tx) error {
		v, err := readSchemaVersion(tx)
		if err != nil || v != SchemaVersion {
			t.Errorf("schema version on disk %d (%v), want %d", v, err, SchemaVersion)
		}
		return nil
	})
}

func TestNewFileStartsAtCurrentVersion(t *testing.T) {
	path := newPath(t)
	s := openT(t, path, Options{})
	_ = s.Close()
	rawView(t, path, func(tx *bbolt.Tx) error {
		v, err := readSchemaVersion(tx)
		if err != nil || v != SchemaVersion {
			t.Errorf("new file schema version %d (%v), want %d", v, err, SchemaVersion)
		}
		return nil
	})
}

func setVersion(t *testing.T, path string, v uint64) {
	t.Helper()
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketSys).Put(keySchemaVersion, binary.BigEndian.AppendUint64(nil, v))
	})
}

func TestNewerSchemaRefused(t *testing.T) {
	path := newPath(t)
	s := openT(t, path, Options{})
	_ = s.Close()
	setVersion(t, path, SchemaVersion+1)
	_, err := Open(t.Context(), path, Options{})
	if !errors.Is(err, storage.ErrSchema) || !strings.Contains(err.Error(), "newer vaultd") {
		t.Fatalf("Open of a newer file: %v, want ErrSchema", err)
	}
	// The refused file is untouched and still locked by nobody.
	rawView(t, path, func(tx *bbolt.Tx) error {
		if v, _ := readSchemaVersion(tx); v != SchemaVersion+1 {
			t.Errorf("refused open changed the version to %d", v)
		}
		return nil
	})
}

// TestMigrationPath registers a v1->v2 migration (as a later release
// would) and checks it runs once, atomically, and persists the version.
func TestMigrationPath(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	runs := 0
	v2 := append(append([]migration(nil), migrations...), migration{
		name: "v2: test marker",
		fn: func(tx *bbolt.Tx) error {
			runs++
			return tx.Bucket(bucketSys).Put([]byte("v2_marker"), []byte("yes"))
		},
	})
	for range 2 {
		s2, err := open(ctx, path, Options{}, v2)
		if err != nil {
			t.Fatal(err)
		}
		if err := s2.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s2.GetTenant(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		_ = s2.Close()
	}
	if runs != 1 {
		t.Fatalf("v2 migration ran %d times, want 1", runs)
	}
	rawView(t, path, func(tx *bbolt.Tx) error {
		if v, _ := readSchemaVersion(tx); v != 2 {
			t.Errorf("version after migration %d, want 2", v)
		}
		if !bytes.Equal(tx.Bucket(bucketSys).Get([]byte("v2_marker")), []byte("yes")) {
			t.Error("v2 migration's change not persisted")
		}
		return nil
	})
	// This build (version 1) must now refuse the file.
	if _, err := Open(ctx, path, Options{}); !errors.Is(err, storage.ErrSchema) {
		t.Fatalf("older build opening a migrated file: %v", err)
	}
}

func TestMigrationFailureIsAtomic(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	_ = s.Close()
	boom := errors.New("boom")
	bad := append(append([]migration(nil), migrations...),
		migration{name: "v2 writes then fails", fn: func(tx *bbolt.Tx) error {
			if err := tx.Bucket(bucketSys).Put([]byte("half"), []byte("done")); err != nil {
				return err
			}
			return boom
		}})
	_, err := open(ctx, path, Options{}, bad)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "migration 1->2") {
		t.Fatalf("failing migration: %v", err)
	}
	rawView(t, path, func(tx *bbolt.Tx) error {
		if v, _ := readSchemaVersion(tx); v != 1 {
			t.Errorf("version after failed migration %d, want 1", v)
		}
		if tx.Bucket(bucketSys).Get([]byte("half")) != nil {
			t.Error("failed migration left a partial change")
		}
		return nil
	})
	// The lock was released: the file opens normally.
	openT(t, path, Options{})
}

func TestCorruptRecords(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	for _, id := range []string{"acme", "other"} {
		if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := storagetest.NoEvent(s).PutIntegration(ctx, "acme", storagetest.NewIntegration("acme", "good", 64)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	const marker = "SECRETMARKER"
	truncated := []byte(`{"v":1,"id":"crm","tenant_id":"acme","access_token_ct":"` + marker)
	var goodRec []byte
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		ib := tx.Bucket([]byte("t/acme")).Bucket(bucketIntegrations)
		goodRec = bytes.Clone(ib.Get([]byte("good")))
		if err := ib.Put([]byte("crm"), truncated); err != nil {
			return err
		}
		if err := ib.Put([]byte("future"), []byte(`{"v":9,"id":"future","tenant_id":"acme"}`)); err != nil {
			return err
		}
		if err := ib.Put([]byte("null"), []byte(`null`)); err != nil {
			return err
		}
		// acme's record copied under another tenant: must not be served there.
		oib := tx.Bucket([]byte("t/other")).Bucket(bucketIntegrations)
		if err := oib.Put([]byte("good"), goodRec); err != nil {
			return err
		}
		return oib.Put([]byte("moved"), goodRec)
	})

	s = openT(t, path, Options{})
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, storage.ErrCorrupt) {
			t.Fatalf("%s: %v, want ErrCorrupt", what, err)
		}
		if strings.Contains(err.Error(), marker) {
			t.Fatalf("%s: error echoes record content: %v", what, err)
		}
	}
	_, err := s.GetIntegration(ctx, "acme", "crm")
	check("Get truncated", err)
	_, err = s.GetIntegration(ctx, "acme", "future")
	check("Get future version", err)
	_, err = s.GetIntegration(ctx, "acme", "null")
	check("Get null", err)
	_, err = s.GetIntegration(ctx, "other", "good")
	check("Get record of another tenant", err)
	_, err = s.GetIntegration(ctx, "other", "moved")
	check("Get record under another id", err)
	_, err = s.ListIntegrations(ctx, "acme")
	check("List", err)
	in := storagetest.NewIntegration("acme", "crm", 16)
	_, err = storagetest.NoEvent(s).PutIntegration(ctx, "acme", in)
	check("Put over a corrupt record", err)
	_, err = storagetest.NoEvent(s).CompareAndSwapIntegration(ctx, "acme", in)
	check("CAS over a corrupt record", err)
	if got, err := s.GetIntegration(ctx, "acme", "good"); err != nil || got.ID != "good" {
		t.Fatalf("healthy record next to corrupt ones: %v", err)
	}
	// Deleting is the repair path.
	for _, id := range []string{"crm", "future", "null"} {
		if err := storagetest.NoEvent(s).DeleteIntegration(ctx, "acme", id); err != nil {
			t.Fatal(err)
		}
	}
	if l, err := s.ListIntegrations(ctx, "acme"); err != nil || len(l) != 1 {
		t.Fatalf("after repair: %d %v", len(l), err)
	}
	_ = s.Close()

	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("t/acme")).Put(keyTenant, []byte(`{"v":1,"id":`))
	})
	s = openT(t, path, Options{})
	_, err = s.GetTenant(ctx, "acme")
	check("GetTenant", err)
	_, err = s.ListTenants(ctx)
	check("ListTenants", err)
	_, err = storagetest.NoEvent(s).UpdateTenant(ctx, storagetest.NewTenant("acme"))
	check("UpdateTenant", err)
}

func TestCorruptAudit(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	for range 3 {
		if _, err := s.AppendAudit(ctx, storagetest.ChainBuilder(`"action":"x"`)); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Close()

	// A garbled event.
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketAudit).Put(seqKey(2), []byte(`{"seq":2,"hash":`))
	})
	s = openT(t, path, Options{})
	err := s.ScanAudit(ctx, 0, func(storage.AuditRecord) (bool, error) { return true, nil })
	if !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("scan over a garbled event: %v", err)
	}
	_ = s.Close()

	// A deleted event: the head no longer matches a contiguous chain.
	rawUpdate(t, path, func(tx *bbolt.Tx) error { return tx.Bucket(bucketAudit).Delete(seqKey(2)) })
	s = openT(t, path, Options{})
	err = s.ScanAudit(ctx, 0, func(storage.AuditRecord) (bool, error) { return true, nil })
	if !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("scan over a gap: %v", err)
	}
	_ = s.Close()

	// A truncated tail: head says 3, last event is 1.
	rawUpdate(t, path, func(tx *bbolt.Tx) error { return tx.Bucket(bucketAudit).Delete(seqKey(3)) })
	s = openT(t, path, Options{})
	if _, err := s.AppendAudit(ctx, storagetest.ChainBuilder(`"action":"x"`)); !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("append after a truncated tail: %v", err)
	}
	if err := s.ScanAudit(ctx, 0, func(storage.AuditRecord) (bool, error) { return true, nil }); !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("scan of a truncated tail: %v", err)
	}
}

// FuzzDecodeIntegration: no input makes the decoder panic, and whatever
// decodes re-encodes to something that decodes to the same record.
func FuzzDecodeIntegration(f *testing.F) {
	good, _ := encodeIntegration(storagetest.NewIntegration("acme", "crm", 32))
	f.Add(good)
	f.Add([]byte(`{"v":1,"id":"crm","tenant_id":"acme"}`))
	f.Add([]byte(`{"v":1,"id":"crm","tenant_id":"acme","scopes":null,"access_token_ct":"!!"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := decodeIntegration("acme", "crm", data)
		if err != nil {
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("decode error without ErrCorrupt: %v", err)
			}
			return
		}
		enc, err := encodeIntegration(in)
		if err != nil {
			return // e.g. a time outside what JSON can carry
		}
		again, err := decodeIntegration("acme", "crm", enc)
		if err != nil || !storagetest.EqualIntegration(in, again) {
			t.Fatalf("round trip changed the record: %v", err)
		}
	})
}
