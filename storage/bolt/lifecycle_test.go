package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/storagetest"
)

// lifecycleFixture offboards "gone", stores a revocation and two
// deliveries with cursor 7 in s.
func lifecycleFixture(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("gone")); err != nil {
		t.Fatal(err)
	}
	cs := storagetest.NewConnectSession("gone", "cs-1")
	if _, err := storagetest.NoEvent(s).CreateConnectSession(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OffboardTenant(ctx, "gone", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutRevocation(ctx, storagetest.NewRevocation("rv-1", "gone", "crm"), nil); err != nil {
		t.Fatal(err)
	}
	failed := storagetest.NewDelivery("msg_2", storagetest.T0)
	failed.Status = storage.DeliveryFailed
	if err := s.EnqueueDeliveries(ctx, 7, []storage.Delivery{storagetest.NewDelivery("msg_1", storagetest.T0), failed}); err != nil {
		t.Fatal(err)
	}
}

// TestLifecycleLayout: the tombstone, revocation, deliveries, their due
// index and the cursor sit where doc.go says, and the offboarded tenant's
// bucket and digest index entries are gone.
func TestLifecycleLayout(t *testing.T) {
	path := newPath(t)
	s := openT(t, path, Options{})
	lifecycleFixture(t, s)
	_ = s.Close()
	rawView(t, path, func(tx *bbolt.Tx) error {
		if tx.Bucket([]byte("t/gone")) != nil {
			t.Error("the offboarded tenant's bucket is still there")
		}
		if idx := tx.Bucket(bucketConnectIndex); idx != nil && idx.Stats().KeyN != 0 {
			t.Errorf("%d digest index entries left", idx.Stats().KeyN)
		}
		if v := tx.Bucket([]byte("offboarded")).Get([]byte("gone")); string(v) != `{"v":1}` {
			t.Errorf("tombstone = %q", v)
		}
		if v := tx.Bucket([]byte("revocations")).Get([]byte("rv-1")); !bytes.HasPrefix(v, []byte(`{"v":1,"id":"rv-1","tenant_id":"gone",`)) {
			t.Errorf("revocation record = %.60s", v)
		}
		if v := tx.Bucket([]byte("webhook_deliveries")).Get([]byte("msg_1")); !bytes.HasPrefix(v, []byte(`{"v":1,"id":"msg_1",`)) {
			t.Errorf("delivery record = %.60s", v)
		}
		var keys []string
		_ = tx.Bucket([]byte("webhook_due")).ForEach(func(k, v []byte) error {
			keys = append(keys, string(k[:bytes.IndexByte(k, 0)])+"/"+string(k[bytes.IndexByte(k, 0)+13:]))
			return nil
		})
		if len(keys) != 2 || keys[0] != "failed/msg_2" || keys[1] != "pending/msg_1" {
			t.Errorf("due index keys %v", keys)
		}
		if v := tx.Bucket(bucketSys).Get([]byte("webhook_cursor")); len(v) != 8 || binary.BigEndian.Uint64(v) != 7 {
			t.Errorf("webhook_cursor = %x", v)
		}
		return nil
	})
}

// TestLifecycleOnOldFile: a file written before the lifecycle buckets
// opens read-only and read-write at the same schema version, reads as
// having none of them, refuses their writes read-only, and gets them on
// the first write that needs them.
func TestLifecycleOnOldFile(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	rawView(t, path, func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketOffboarded, bucketRevocations, bucketDeliveries, bucketDeliveryDue} {
			if tx.Bucket(b) != nil {
				t.Errorf("bucket %s created without a write that needs it", b)
			}
		}
		if tx.Bucket(bucketSys).Get(keyWebhookCursor) != nil {
			t.Error("webhook_cursor written without an enqueue")
		}
		return nil
	})

	r := openT(t, path, Options{ReadOnly: true})
	if l, err := r.ListOffboarded(ctx); err != nil || len(l) != 0 {
		t.Fatalf("ListOffboarded on an old file: %v %v", l, err)
	}
	if l, err := r.ListRevocations(ctx); err != nil || len(l) != 0 {
		t.Fatalf("ListRevocations on an old file: %d %v", len(l), err)
	}
	for _, st := range []string{"", storage.DeliveryPending} {
		if l, err := r.ListDeliveries(ctx, st, 0); err != nil || len(l) != 0 {
			t.Fatalf("ListDeliveries(%q) on an old file: %d %v", st, len(l), err)
		}
	}
	if c, err := r.WebhookCursor(ctx); err != nil || c != 0 {
		t.Fatalf("WebhookCursor on an old file: %d %v", c, err)
	}
	if _, err := r.GetDelivery(ctx, "msg_1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetDelivery on an old file: %v", err)
	}
	if n, err := r.PruneDeliveries(ctx, storagetest.T0, 1); !errors.Is(err, storage.ErrReadOnly) {
		t.Fatalf("PruneDeliveries on a read-only store: %d %v", n, err)
	}
	ro := map[string]error{}
	_, ro["OffboardTenant"] = r.OffboardTenant(ctx, "acme", nil)
	rv := storagetest.NewRevocation("rv-1", "acme", "crm")
	_, _, ro["PutRevocation"] = r.PutRevocation(ctx, rv, nil)
	rv.Revision = 1
	_, _, ro["UpdateRevocation"] = r.UpdateRevocation(ctx, rv, nil)
	_, ro["DeleteRevocation"] = r.DeleteRevocation(ctx, "rv-1", nil)
	d := storagetest.NewDelivery("msg_1", storagetest.T0)
	ro["EnqueueDeliveries"] = r.EnqueueDeliveries(ctx, 1, []storage.Delivery{d})
	d.Revision = 1
	_, _, ro["UpdateDelivery"] = r.UpdateDelivery(ctx, d, nil)
	for name, err := range ro {
		if !errors.Is(err, storage.ErrReadOnly) {
			t.Errorf("%s on a read-only store: %v, want ErrReadOnly", name, err)
		}
	}
	if _, err := r.GetTenant(ctx, "acme"); err != nil {
		t.Fatalf("tenant after refused writes: %v", err)
	}
	_ = r.Close()

	w := openT(t, path, Options{})
	if w.schema != SchemaVersion {
		t.Fatalf("schema %d, want %d (the lifecycle needs no migration)", w.schema, SchemaVersion)
	}
	lifecycleFixture(t, w)
	if l, err := w.ListDeliveries(ctx, storage.DeliveryPending, 0); err != nil || len(l) != 1 {
		t.Fatalf("pending after the first enqueue: %d %v", len(l), err)
	}
	if err := w.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLifecycleBackup: a snapshot carries the tombstones, revocations,
// deliveries with their index, and the cursor.
func TestLifecycleBackup(t *testing.T) {
	ctx := t.Context()
	s := openT(t, newPath(t), Options{})
	lifecycleFixture(t, s)
	bk := filepath.Join(t.TempDir(), "backup.db")
	if _, err := s.BackupToFile(ctx, bk); err != nil {
		t.Fatal(err)
	}
	b := openT(t, bk, Options{ReadOnly: true})
	if l, err := b.ListOffboarded(ctx); err != nil || len(l) != 1 || l[0] != "gone" {
		t.Fatalf("offboarded in the backup: %v %v", l, err)
	}
	if l, err := b.ListRevocations(ctx); err != nil || len(l) != 1 || l[0].ID != "rv-1" {
		t.Fatalf("revocations in the backup: %+v %v", l, err)
	}
	if l, err := b.ListDeliveries(ctx, storage.DeliveryFailed, 0); err != nil || len(l) != 1 || l[0].ID != "msg_2" {
		t.Fatalf("failed deliveries in the backup: %+v %v", l, err)
	}
	if c, err := b.WebhookCursor(ctx); err != nil || c != 7 {
		t.Fatalf("cursor in the backup: %d %v", c, err)
	}
	if _, err := b.GetTenant(ctx, "gone"); !errors.Is(err, storage.ErrTenantNotFound) {
		t.Fatalf("offboarded tenant in the backup: %v", err)
	}
}

// TestCorruptLifecycle: damaged lifecycle records and index entries are
// storage.ErrCorrupt, never a missing or different record.
func TestCorruptLifecycle(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	lifecycleFixture(t, s)
	_ = s.Close()
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bucketRevocations).Put([]byte("rv-1"), []byte(`{"v":1,"id":"rv-2"}`)); err != nil {
			return err
		}
		// A due entry for a delivery that is not there.
		k := deliveryDueKey(storage.Delivery{ID: "msg_ghost", Status: storage.DeliveryPending, NextAttemptAt: storagetest.T0})
		if err := tx.Bucket(bucketDeliveryDue).Put(k, nil); err != nil {
			return err
		}
		// A record whose status disagrees with its due entry.
		v := tx.Bucket(bucketDeliveries).Get([]byte("msg_2"))
		return tx.Bucket(bucketDeliveries).Put([]byte("msg_2"), bytes.Replace(v, []byte(`"failed"`), []byte(`"delivered"`), 1))
	})
	s = openT(t, path, Options{})
	if _, err := s.ListRevocations(ctx); !errors.Is(err, storage.ErrCorrupt) {
		t.Errorf("ListRevocations of a misfiled record: %v", err)
	}
	if _, err := s.ListDeliveries(ctx, storage.DeliveryPending, 0); !errors.Is(err, storage.ErrCorrupt) {
		t.Errorf("ListDeliveries with a dangling index entry: %v", err)
	}
	if _, err := s.ListDeliveries(ctx, storage.DeliveryFailed, 0); !errors.Is(err, storage.ErrCorrupt) {
		t.Errorf("ListDeliveries with a disagreeing index entry: %v", err)
	}
}

// FuzzTimeKey: byte order of timeKey is time order, for any two instants
// (before 1970, the zero time and zones included).
func FuzzTimeKey(f *testing.F) {
	f.Add(int64(0), int64(0), int64(0), int64(1))
	f.Add(int64(-62135596800), int64(0), int64(-1), int64(999999999))
	f.Add(int64(1741964966), int64(535897932), int64(1741964966), int64(535897933))
	f.Add(int64(-1), int64(0), int64(1), int64(0))
	f.Fuzz(func(t *testing.T, s1, n1, s2, n2 int64) {
		a, b := time.Unix(s1, n1), time.Unix(s2, n2).In(time.FixedZone("x", 3600))
		if got, want := bytes.Compare(timeKey(a), timeKey(b)), a.Compare(b); got != want {
			t.Fatalf("timeKey order %d, time order %d for %v and %v", got, want, a, b)
		}
	})
}

// FuzzDecodeRevocation: no input makes the decoder panic, and whatever
// decodes re-encodes to something that decodes to the same record.
func FuzzDecodeRevocation(f *testing.F) {
	good, _ := encodeRevocation(storagetest.NewRevocation("rv-1", "acme", "crm"))
	f.Add(good)
	f.Add([]byte(`{"v":1,"id":"rv-1"}`))
	f.Add([]byte(`{"v":1,"id":"rv-1","sealed":"!!"}`))
	f.Add([]byte(`{"v":2,"id":"rv-1"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRevocation("rv-1", data)
		if err != nil {
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("decode error without ErrCorrupt: %v", err)
			}
			return
		}
		enc, err := encodeRevocation(r)
		if err != nil {
			return // e.g. a time outside what JSON can carry
		}
		again, err := decodeRevocation("rv-1", enc)
		if err != nil || !storagetest.EqualRevocation(r, again) {
			t.Fatalf("round trip changed the record: %v", err)
		}
	})
}

// FuzzDecodeDelivery: as FuzzDecodeRevocation, and a decoded delivery
// always has a known status (its due index key depends on it).
func FuzzDecodeDelivery(f *testing.F) {
	good, _ := encodeDelivery(storagetest.NewDelivery("msg_1", storagetest.T0))
	f.Add(good)
	f.Add([]byte(`{"v":1,"id":"msg_1","status":"pending"}`))
	f.Add([]byte(`{"v":1,"id":"msg_1","status":"sent"}`))
	f.Add([]byte(`{"v":1,"id":"msg_1","status":"failed","body":"!!"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decodeDelivery("msg_1", data)
		if err != nil {
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("decode error without ErrCorrupt: %v", err)
			}
			return
		}
		if !storage.ValidDeliveryStatus(d.Status) {
			t.Fatalf("decoded status %q", d.Status)
		}
		enc, err := encodeDelivery(d)
		if err != nil {
			return
		}
		again, err := decodeDelivery("msg_1", enc)
		if err != nil || !storagetest.EqualDelivery(d, again) {
			t.Fatalf("round trip changed the record: %v", err)
		}
	})
}
