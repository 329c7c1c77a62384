package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage"
)

// The lifecycle's buckets are top level and platform wide, created by the
// first write that needs them; a missing one reads as empty (doc.go).
var (
	bucketOffboarded  = []byte("offboarded")
	bucketRevocations = []byte("revocations")
	bucketDeliveries  = []byte("webhook_deliveries")
	// bucketDeliveryDue indexes deliveries by status, then NextAttemptAt,
	// then id (deliveryDueKey), so the dispatcher's "pending, oldest due
	// first" poll reads only what it returns.
	bucketDeliveryDue = []byte("webhook_due")
	keyWebhookCursor  = []byte("webhook_cursor")
)

// errStopScan ends a ForEach early; it never leaves this file.
var errStopScan = errors.New("storage: stop scan")

// tombstone is the value of an offboarded id.
var tombstone = []byte(`{"v":1}`)

type revocationRecord struct {
	V int `json:"v"`
	storage.Revocation
}

type deliveryRecord struct {
	V int `json:"v"`
	storage.Delivery
}

func decodeRevocation(id string, val []byte) (storage.Revocation, error) {
	var r revocationRecord
	if err := json.Unmarshal(val, &r); err != nil {
		return storage.Revocation{}, corrupt("revocation %q: %v", id, err)
	}
	if r.V != recordVersion {
		return storage.Revocation{}, corrupt("revocation %q: record version %d not supported", id, r.V)
	}
	if r.ID != id {
		return storage.Revocation{}, corrupt("revocation %q: record names revocation %q", id, r.ID)
	}
	return r.Revocation, nil
}

func encodeRevocation(r storage.Revocation) ([]byte, error) {
	return json.Marshal(revocationRecord{V: recordVersion, Revocation: r})
}

func decodeDelivery(id string, val []byte) (storage.Delivery, error) {
	var r deliveryRecord
	if err := json.Unmarshal(val, &r); err != nil {
		return storage.Delivery{}, corrupt("delivery %q: %v", id, err)
	}
	if r.V != recordVersion {
		return storage.Delivery{}, corrupt("delivery %q: record version %d not supported", id, r.V)
	}
	if r.ID != id {
		return storage.Delivery{}, corrupt("delivery %q: record names delivery %q", id, r.ID)
	}
	if !storage.ValidDeliveryStatus(r.Status) {
		return storage.Delivery{}, corrupt("delivery %q: status %q", id, r.Status)
	}
	return r.Delivery, nil
}

func encodeDelivery(d storage.Delivery) ([]byte, error) {
	return json.Marshal(deliveryRecord{V: recordVersion, Delivery: d})
}

func cloneRevocation(r storage.Revocation) storage.Revocation {
	r.Sealed = bytes.Clone(r.Sealed)
	return r
}

func cloneDelivery(d storage.Delivery) storage.Delivery {
	d.Body = bytes.Clone(d.Body)
	return d
}

// timeKey encodes t so that byte order is time order: the Unix seconds
// with the sign bit flipped (times before 1970, the zero time included,
// sort first), then the nanoseconds, both big-endian.
func timeKey(t time.Time) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 12), uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// duePrefix is the index prefix of one status: no status contains 0x00.
func duePrefix(status string) []byte { return append([]byte(status), 0) }

// deliveryDueKey is d's key in bucketDeliveryDue: status 0x00
// timeKey(NextAttemptAt) id.
func deliveryDueKey(d storage.Delivery) []byte {
	k := append(duePrefix(d.Status), timeKey(d.NextAttemptAt)...)
	return append(k, d.ID...)
}

// OffboardTenant deletes the tenant's bucket (its record, integrations and
// connect sessions), the sessions' digest index entries, and records a
// tombstone, in one write transaction with the audit event. A nil build
// commits no event (storage.AuditFunc).
//
// Deleting a bucket returns its pages to bbolt's freelist; their old bytes
// stay in the file until reused. That is why offboarding also destroys
// the tenant's HSM key (crypto-shred): the ciphertext left behind, here or
// in a backup, can no longer be opened.
func (s *Store) OffboardTenant(ctx context.Context, id string, build storage.AuditFunc) (storage.AuditRecord, error) {
	if !storage.ValidID(id) {
		return storage.AuditRecord{}, invalidID("tenant", id)
	}
	var rec storage.AuditRecord
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		rec = storage.AuditRecord{}
		name := tenantBucket(id)
		tb := tx.Bucket(name)
		if tb == nil {
			return reject(tenantNotFound(id))
		}
		// Read every session first: their digests say which index entries
		// to remove, and a session we cannot read fails the whole
		// offboarding rather than leave an entry behind.
		var sessions []storage.ConnectSession
		if cb := tb.Bucket(bucketConnect); cb != nil {
			err := cb.ForEach(func(k, v []byte) error {
				if v == nil {
					return corrupt("tenant %q: unexpected bucket %q among connect sessions", id, k)
				}
				cs, err := decodeConnectSession(id, string(k), v)
				if err != nil {
					return err
				}
				sessions = append(sessions, cs)
				return nil
			})
			if err != nil {
				return reject(err)
			}
		}
		if idx := tx.Bucket(bucketConnectIndex); idx != nil {
			for _, cs := range sessions {
				self := sessionRef{cs.TenantID, cs.ID}.encode()
				for _, d := range cs.Digests() {
					if v := idx.Get(d); v != nil && bytes.Equal(v, self) {
						if err := idx.Delete(d); err != nil {
							return err
						}
					}
				}
			}
		}
		if err := tx.DeleteBucket(name); err != nil {
			return err
		}
		ob, err := tx.CreateBucketIfNotExists(bucketOffboarded)
		if err != nil {
			return err
		}
		if err := ob.Put([]byte(id), tombstone); err != nil {
			return err
		}
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return storage.AuditRecord{}, err
	}
	return rec, nil
}

// isOffboarded reports whether id has a tombstone.
func isOffboarded(tx *bbolt.Tx, id string) bool {
	ob := tx.Bucket(bucketOffboarded)
	return ob != nil && ob.Get([]byte(id)) != nil
}

// ListOffboarded lists the offboarded tenant ids, sorted.
func (s *Store) ListOffboarded(ctx context.Context) ([]string, error) {
	out := []string{}
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		out = out[:0]
		ob := tx.Bucket(bucketOffboarded)
		if ob == nil {
			return nil
		}
		n := 0
		return ob.ForEach(func(k, v []byte) error {
			if n++; n%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if v == nil || !storage.ValidID(string(k)) {
				return corrupt("offboarded tenant entry %q", k)
			}
			out = append(out, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func revocationNotFound(id string) error {
	return fmt.Errorf("%w: revocation %q", storage.ErrNotFound, id)
}

// PutRevocation stores r with Revision 1; storage.ErrExists if the id is
// taken. A nil build commits no event (storage.AuditFunc).
func (s *Store) PutRevocation(ctx context.Context, r storage.Revocation, build storage.AuditFunc) (storage.Revocation, storage.AuditRecord, error) {
	if err := storage.CheckRevocation(r); err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	r = cloneRevocation(r)
	r.Revision = 1
	val, err := encodeRevocation(r)
	if err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, fmt.Errorf("storage: encode revocation %q: %w", r.ID, err)
	}
	var rec storage.AuditRecord
	err = s.write(ctx, func(tx *bbolt.Tx) error {
		rec = storage.AuditRecord{}
		if rb := tx.Bucket(bucketRevocations); rb != nil && rb.Get([]byte(r.ID)) != nil {
			return reject(fmt.Errorf("%w: revocation %q", storage.ErrExists, r.ID))
		}
		rb, err := tx.CreateBucketIfNotExists(bucketRevocations)
		if err != nil {
			return err
		}
		if err := rb.Put([]byte(r.ID), val); err != nil {
			return err
		}
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	return cloneRevocation(r), rec, nil
}

// ListRevocations lists every pending revocation sorted by id.
func (s *Store) ListRevocations(ctx context.Context) ([]storage.Revocation, error) {
	out := []storage.Revocation{}
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		out = out[:0]
		rb := tx.Bucket(bucketRevocations)
		if rb == nil {
			return nil
		}
		n := 0
		return rb.ForEach(func(k, v []byte) error {
			if n++; n%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if v == nil {
				return corrupt("unexpected bucket %q among revocations", k)
			}
			r, err := decodeRevocation(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateRevocation replaces the revocation if r.Revision equals the stored
// one. A nil build commits no event (storage.AuditFunc).
func (s *Store) UpdateRevocation(ctx context.Context, r storage.Revocation, build storage.AuditFunc) (storage.Revocation, storage.AuditRecord, error) {
	if err := storage.CheckRevocation(r); err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	r = cloneRevocation(r)
	want := r.Revision
	var (
		out storage.Revocation
		rec storage.AuditRecord
	)
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		out, rec = storage.Revocation{}, storage.AuditRecord{}
		rb := tx.Bucket(bucketRevocations)
		if rb == nil {
			return reject(revocationNotFound(r.ID))
		}
		key := []byte(r.ID)
		old := rb.Get(key)
		if old == nil {
			return reject(revocationNotFound(r.ID))
		}
		h, err := decodeHeader(fmt.Sprintf("revocation %q", r.ID), old)
		if err != nil {
			return reject(err)
		}
		if h.Revision != want {
			return reject(fmt.Errorf("%w: revocation %q is at revision %d, update was based on %d",
				storage.ErrConflict, r.ID, h.Revision, want))
		}
		next := r
		next.Revision = h.Revision + 1
		val, err := encodeRevocation(next)
		if err != nil {
			return reject(fmt.Errorf("storage: encode revocation %q: %w", r.ID, err))
		}
		if err := rb.Put(key, val); err != nil {
			return err
		}
		out = next
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	return cloneRevocation(out), rec, nil
}

// DeleteRevocation removes it; storage.ErrNotFound if absent. A nil build
// commits no event (storage.AuditFunc).
func (s *Store) DeleteRevocation(ctx context.Context, id string, build storage.AuditFunc) (storage.AuditRecord, error) {
	if !storage.ValidID(id) {
		return storage.AuditRecord{}, invalidID("revocation", id)
	}
	var rec storage.AuditRecord
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		rec = storage.AuditRecord{}
		rb := tx.Bucket(bucketRevocations)
		if rb == nil || rb.Get([]byte(id)) == nil {
			return reject(revocationNotFound(id))
		}
		if err := rb.Delete([]byte(id)); err != nil {
			return err
		}
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return storage.AuditRecord{}, err
	}
	return rec, nil
}

func deliveryNotFound(id string) error {
	return fmt.Errorf("%w: delivery %q", storage.ErrNotFound, id)
}

func readWebhookCursor(tx *bbolt.Tx) (uint64, error) {
	sys := tx.Bucket(bucketSys)
	if sys == nil {
		return 0, corrupt("sys bucket missing")
	}
	v := sys.Get(keyWebhookCursor)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, corrupt("webhook_cursor is %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// putDeliveryTx stores d (encoded as val) and its index entry, removing
// old's entry when old is not nil. It modifies tx: errors roll back.
func putDeliveryTx(tx *bbolt.Tx, old *storage.Delivery, d storage.Delivery, val []byte) error {
	db, err := tx.CreateBucketIfNotExists(bucketDeliveries)
	if err != nil {
		return err
	}
	due, err := tx.CreateBucketIfNotExists(bucketDeliveryDue)
	if err != nil {
		return err
	}
	if old != nil {
		if err := due.Delete(deliveryDueKey(*old)); err != nil {
			return err
		}
	}
	if err := db.Put([]byte(d.ID), val); err != nil {
		return err
	}
	return due.Put(deliveryDueKey(d), nil)
}

// EnqueueDeliveries stores ds (each with Revision 1) and moves the webhook
// cursor in one write transaction: all or nothing.
func (s *Store) EnqueueDeliveries(ctx context.Context, cursor uint64, ds []storage.Delivery) error {
	prepared := make([]storage.Delivery, len(ds))
	vals := make([][]byte, len(ds))
	seen := make(map[string]bool, len(ds))
	for i, d := range ds {
		if err := storage.CheckDelivery(d); err != nil {
			return err
		}
		if seen[d.ID] {
			return fmt.Errorf("%w: delivery %q is enqueued twice", storage.ErrExists, d.ID)
		}
		seen[d.ID] = true
		d = cloneDelivery(d)
		d.Revision = 1
		val, err := encodeDelivery(d)
		if err != nil {
			return fmt.Errorf("storage: encode delivery %q: %w", d.ID, err)
		}
		prepared[i], vals[i] = d, val
	}
	return s.write(ctx, func(tx *bbolt.Tx) error {
		cur, err := readWebhookCursor(tx)
		if err != nil {
			return reject(err)
		}
		if cursor < cur {
			return reject(fmt.Errorf("%w: webhook cursor %d is below the stored %d", storage.ErrInvalidRecord, cursor, cur))
		}
		if db := tx.Bucket(bucketDeliveries); db != nil {
			for _, d := range prepared {
				if db.Get([]byte(d.ID)) != nil {
					return reject(fmt.Errorf("%w: delivery %q", storage.ErrExists, d.ID))
				}
			}
		}
		for i, d := range prepared {
			if err := putDeliveryTx(tx, nil, d, vals[i]); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketSys).Put(keyWebhookCursor, binary.BigEndian.AppendUint64(nil, cursor))
	})
}

// WebhookCursor returns the stored cursor (0 when never set).
func (s *Store) WebhookCursor(ctx context.Context) (uint64, error) {
	var out uint64
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		var err error
		out, err = readWebhookCursor(tx)
		return err
	})
	return out, err
}

// loadDelivery reads a stored delivery; ok false when there is none.
func loadDelivery(tx *bbolt.Tx, id string) (d storage.Delivery, ok bool, err error) {
	db := tx.Bucket(bucketDeliveries)
	if db == nil {
		return storage.Delivery{}, false, nil
	}
	val := db.Get([]byte(id))
	if val == nil {
		return storage.Delivery{}, false, nil
	}
	d, err = decodeDelivery(id, val)
	return d, err == nil, err
}

// GetDelivery returns storage.ErrNotFound for an unknown id.
func (s *Store) GetDelivery(ctx context.Context, id string) (storage.Delivery, error) {
	if !storage.ValidID(id) {
		return storage.Delivery{}, invalidID("delivery", id)
	}
	var out storage.Delivery
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		d, ok, err := loadDelivery(tx, id)
		if err != nil {
			return err
		}
		if !ok {
			return deliveryNotFound(id)
		}
		out = d
		return nil
	})
	if err != nil {
		return storage.Delivery{}, err
	}
	return out, nil
}

// ListDeliveries lists deliveries of that status ("" = any), ordered by
// NextAttemptAt then ID, at most limit (<= 0: all). With a status it walks
// that status's part of the due index and stops at limit; "" (the
// operator's listing) reads every delivery and sorts.
func (s *Store) ListDeliveries(ctx context.Context, status string, limit int) ([]storage.Delivery, error) {
	if err := storage.CheckDeliveryStatusFilter(status); err != nil {
		return nil, err
	}
	out := []storage.Delivery{}
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		out = out[:0]
		db := tx.Bucket(bucketDeliveries)
		if db == nil {
			return nil
		}
		if status == "" {
			return s.listAllDeliveries(ctx, db, &out, limit)
		}
		due := tx.Bucket(bucketDeliveryDue)
		if due == nil {
			return corrupt("webhook_due bucket missing")
		}
		prefix := duePrefix(status)
		c := due.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if limit > 0 && len(out) >= limit {
				break
			}
			if len(out)%ctxCheckEvery == ctxCheckEvery-1 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if len(k) <= len(prefix)+12 {
				return corrupt("webhook_due key of %d bytes", len(k))
			}
			id := string(k[len(prefix)+12:])
			val := db.Get([]byte(id))
			if val == nil {
				return corrupt("webhook_due names missing delivery %q", id)
			}
			d, err := decodeDelivery(id, val)
			if err != nil {
				return err
			}
			// An entry is written and removed with its record: one that
			// disagrees with it was damaged outside this store.
			if !bytes.Equal(deliveryDueKey(d), k) {
				return corrupt("webhook_due entry of delivery %q disagrees with its record", id)
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) listAllDeliveries(ctx context.Context, db *bbolt.Bucket, out *[]storage.Delivery, limit int) error {
	n := 0
	err := db.ForEach(func(k, v []byte) error {
		if n++; n%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if v == nil {
			return corrupt("unexpected bucket %q among deliveries", k)
		}
		d, err := decodeDelivery(string(k), v)
		if err != nil {
			return err
		}
		*out = append(*out, d)
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(*out, storage.CompareDeliveries)
	if limit > 0 && len(*out) > limit {
		*out = (*out)[:limit]
	}
	return nil
}

// UpdateDelivery replaces the delivery if d.Revision equals the stored
// one, moving its due index entry. A nil build commits no event
// (storage.AuditFunc).
func (s *Store) UpdateDelivery(ctx context.Context, d storage.Delivery, build storage.AuditFunc) (storage.Delivery, storage.AuditRecord, error) {
	if err := storage.CheckDelivery(d); err != nil {
		return storage.Delivery{}, storage.AuditRecord{}, err
	}
	d = cloneDelivery(d)
	var (
		out storage.Delivery
		rec storage.AuditRecord
	)
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		out, rec = storage.Delivery{}, storage.AuditRecord{}
		old, ok, err := loadDelivery(tx, d.ID)
		if err != nil {
			// Its index entry is named by the record: fail closed.
			return reject(err)
		}
		if !ok {
			return reject(deliveryNotFound(d.ID))
		}
		if old.Revision != d.Revision {
			return reject(fmt.Errorf("%w: delivery %q is at revision %d, update was based on %d",
				storage.ErrConflict, d.ID, old.Revision, d.Revision))
		}
		next := d
		next.Revision = old.Revision + 1
		val, err := encodeDelivery(next)
		if err != nil {
			return reject(fmt.Errorf("storage: encode delivery %q: %w", d.ID, err))
		}
		if err := putDeliveryTx(tx, &old, next, val); err != nil {
			return err
		}
		out = next
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return storage.Delivery{}, storage.AuditRecord{}, err
	}
	return cloneDelivery(out), rec, nil
}

// PruneDeliveries deletes up to max delivered or failed deliveries last
// updated before `before` (in id order, so a repeated call proceeds), with
// their index entries, in one write transaction.
func (s *Store) PruneDeliveries(ctx context.Context, before time.Time, max int) (int, error) {
	if max < 1 {
		return 0, fmt.Errorf("%w: prune at most %d deliveries", storage.ErrInvalidRecord, max)
	}
	var n int
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		n = 0 // a batch may run this more than once
		db := tx.Bucket(bucketDeliveries)
		if db == nil {
			return nil
		}
		var victims []storage.Delivery
		seen := 0
		err := db.ForEach(func(k, v []byte) error {
			if len(victims) >= max {
				return errStopScan
			}
			if seen++; seen%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if v == nil {
				return corrupt("unexpected bucket %q among deliveries", k)
			}
			d, err := decodeDelivery(string(k), v)
			if err != nil {
				return err
			}
			if d.Status != storage.DeliveryPending && d.UpdatedAt.Before(before) {
				victims = append(victims, d)
			}
			return nil
		})
		if err != nil && err != errStopScan {
			return reject(err)
		}
		if len(victims) == 0 {
			return nil
		}
		due := tx.Bucket(bucketDeliveryDue)
		if due == nil {
			return reject(corrupt("webhook_due bucket missing"))
		}
		// Deleting while iterating a bbolt cursor skips keys: collect first.
		for _, d := range victims {
			if err := db.Delete([]byte(d.ID)); err != nil {
				return err
			}
			if err := due.Delete(deliveryDueKey(d)); err != nil {
				return err
			}
		}
		n = len(victims)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
