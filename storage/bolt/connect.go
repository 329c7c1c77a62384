package bolt

import (
	"bytes"
	"context"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage"
)

// Connect sessions live in t/<tenant>/connect, reached through the
// tenant's bucket like integrations. The browser side of the flow knows
// no tenant, so the sessions' LinkHash and StateHash are also keys of the
// top-level connect_digests bucket, whose values name the session
// (<tenant>/<id>). A session and its index entries change in the same
// transaction. Both buckets are created by the first write that needs
// them; reads treat a missing bucket as empty.

// sessionNotFound is the same for a missing tenant and a missing id, so
// callers cannot probe which tenants exist or own an id.
func sessionNotFound(id string) error {
	return fmt.Errorf("%w: connect session %q", storage.ErrNotFound, id)
}

// loadSession reads a stored session of an existing tenant bucket; ok is
// false when there is none.
func loadSession(tb *bbolt.Bucket, tenantID, id string) (cs storage.ConnectSession, ok bool, err error) {
	cb := tb.Bucket(bucketConnect)
	if cb == nil {
		return storage.ConnectSession{}, false, nil
	}
	val := cb.Get([]byte(id))
	if val == nil {
		return storage.ConnectSession{}, false, nil
	}
	cs, err = decodeConnectSession(tenantID, id, val)
	return cs, err == nil, err
}

// digestsFreeTx refuses a digest of next that the index holds for another
// session. It does not modify tx.
func digestsFreeTx(tx *bbolt.Tx, next storage.ConnectSession) error {
	idx := tx.Bucket(bucketConnectIndex)
	if idx == nil {
		return nil
	}
	self := sessionRef{next.TenantID, next.ID}.encode()
	for _, d := range next.Digests() {
		if v := idx.Get(d); v != nil && !bytes.Equal(v, self) {
			return fmt.Errorf("%w: a digest of connect session %q is already indexed", storage.ErrExists, next.ID)
		}
	}
	return nil
}

// checkUpdateTx is the read-only part of an update: the stored session
// exists at next.Revision and next's digests are free. It returns the
// stored session and the tenant's bucket; errors are rejections.
func checkUpdateTx(tx *bbolt.Tx, next storage.ConnectSession) (storage.ConnectSession, *bbolt.Bucket, error) {
	tb := tx.Bucket(tenantBucket(next.TenantID))
	if tb == nil {
		return storage.ConnectSession{}, nil, reject(sessionNotFound(next.ID))
	}
	old, ok, err := loadSession(tb, next.TenantID, next.ID)
	if err != nil {
		return storage.ConnectSession{}, nil, reject(err)
	}
	if !ok {
		return storage.ConnectSession{}, nil, reject(sessionNotFound(next.ID))
	}
	if old.Revision != next.Revision {
		return storage.ConnectSession{}, nil, reject(fmt.Errorf("%w: connect session %q is at revision %d, update was based on %d",
			storage.ErrConflict, next.ID, old.Revision, next.Revision))
	}
	if err := digestsFreeTx(tx, next); err != nil {
		return storage.ConnectSession{}, nil, reject(err)
	}
	return old, tb, nil
}

// writeSessionTx stores val (next encoded) in tb and moves the digest
// index from old's digests to next's; old is the zero session on create,
// next the zero session (and val nil) on delete. It modifies tx, so its
// errors are plain ones that roll the transaction back.
func writeSessionTx(tx *bbolt.Tx, tb *bbolt.Bucket, old, next storage.ConnectSession, val []byte) error {
	if val != nil {
		cb, err := tb.CreateBucketIfNotExists(bucketConnect)
		if err != nil {
			return err
		}
		if err := cb.Put([]byte(next.ID), val); err != nil {
			return err
		}
	} else if cb := tb.Bucket(bucketConnect); cb != nil {
		if err := cb.Delete([]byte(old.ID)); err != nil {
			return err
		}
	}
	if idx := tx.Bucket(bucketConnectIndex); idx != nil && old.ID != "" {
		self := sessionRef{old.TenantID, old.ID}.encode()
		for _, d := range old.Digests() {
			if v := idx.Get(d); v != nil && bytes.Equal(v, self) {
				if err := idx.Delete(d); err != nil {
					return err
				}
			}
		}
	}
	if ds := next.Digests(); len(ds) > 0 {
		idx, err := tx.CreateBucketIfNotExists(bucketConnectIndex)
		if err != nil {
			return err
		}
		ref := sessionRef{next.TenantID, next.ID}.encode()
		for _, d := range ds {
			if err := idx.Put(d, ref); err != nil {
				return err
			}
		}
	}
	return nil
}

// CreateConnectSession stores cs with Revision 1 under its tenant and
// indexes its digests. A nil build commits no event (storage.AuditFunc).
func (s *Store) CreateConnectSession(ctx context.Context, cs storage.ConnectSession, build storage.AuditFunc) (storage.ConnectSession, storage.AuditRecord, error) {
	if err := storage.CheckConnectSession(cs); err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	cs = cloneSession(cs)
	cs.Revision = 1
	val, err := encodeConnectSession(cs)
	if err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, fmt.Errorf("storage: encode connect session %q: %w", cs.ID, err)
	}
	var rec storage.AuditRecord
	err = s.write(ctx, func(tx *bbolt.Tx) error {
		rec = storage.AuditRecord{}
		tb := tx.Bucket(tenantBucket(cs.TenantID))
		if tb == nil {
			return reject(tenantNotFound(cs.TenantID))
		}
		if cb := tb.Bucket(bucketConnect); cb != nil && cb.Get([]byte(cs.ID)) != nil {
			return reject(fmt.Errorf("%w: connect session %q", storage.ErrExists, cs.ID))
		}
		if err := digestsFreeTx(tx, cs); err != nil {
			return reject(err)
		}
		if err := writeSessionTx(tx, tb, storage.ConnectSession{}, cs, val); err != nil {
			return err
		}
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	return cloneSession(cs), rec, nil
}

// GetConnectSession returns storage.ErrNotFound for an unknown id or tenant.
func (s *Store) GetConnectSession(ctx context.Context, tenantID, id string) (storage.ConnectSession, error) {
	if !storage.ValidID(tenantID) {
		return storage.ConnectSession{}, invalidID("tenant", tenantID)
	}
	if !storage.ValidID(id) {
		return storage.ConnectSession{}, invalidID("connect session", id)
	}
	var out storage.ConnectSession
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		tb := tx.Bucket(tenantBucket(tenantID))
		if tb == nil {
			return sessionNotFound(id)
		}
		cs, ok, err := loadSession(tb, tenantID, id)
		if err != nil {
			return err
		}
		if !ok {
			return sessionNotFound(id)
		}
		out = cs
		return nil
	})
	if err != nil {
		return storage.ConnectSession{}, err
	}
	return out, nil
}

// FindConnectSession returns the session whose LinkHash or StateHash is
// digest, whatever its tenant; storage.ErrNotFound if none.
func (s *Store) FindConnectSession(ctx context.Context, digest []byte) (storage.ConnectSession, error) {
	if err := storage.CheckConnectDigest(digest); err != nil {
		return storage.ConnectSession{}, err
	}
	var out storage.ConnectSession
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		idx := tx.Bucket(bucketConnectIndex)
		if idx == nil {
			return fmt.Errorf("%w: connect session", storage.ErrNotFound)
		}
		v := idx.Get(digest)
		if v == nil {
			return fmt.Errorf("%w: connect session", storage.ErrNotFound)
		}
		ref, err := decodeSessionRef(v)
		if err != nil {
			return err
		}
		// An entry is written and removed with its session: one that
		// leads nowhere, or to a session without the digest, was damaged
		// outside this store.
		tb := tx.Bucket(tenantBucket(ref.tenantID))
		if tb == nil {
			return corrupt("digest index names connect session %q of missing tenant %q", ref.id, ref.tenantID)
		}
		cs, ok, err := loadSession(tb, ref.tenantID, ref.id)
		if err != nil {
			return err
		}
		if !ok || (!bytes.Equal(cs.LinkHash, digest) && !bytes.Equal(cs.StateHash, digest)) {
			return corrupt("digest index names connect session %q of tenant %q, which does not carry it", ref.id, ref.tenantID)
		}
		out = cs
		return nil
	})
	if err != nil {
		return storage.ConnectSession{}, err
	}
	return out, nil
}

// UpdateConnectSession replaces the session if cs.Revision equals the
// stored one, moving the digest index with it.
// A nil build commits no event (storage.AuditFunc).
func (s *Store) UpdateConnectSession(ctx context.Context, cs storage.ConnectSession, build storage.AuditFunc) (storage.ConnectSession, storage.AuditRecord, error) {
	if err := storage.CheckConnectSession(cs); err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	cs = cloneSession(cs)
	var (
		out storage.ConnectSession
		rec storage.AuditRecord
	)
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		out, rec = storage.ConnectSession{}, storage.AuditRecord{}
		old, tb, err := checkUpdateTx(tx, cs)
		if err != nil {
			return err
		}
		next := cs
		next.Revision = old.Revision + 1
		val, err := encodeConnectSession(next)
		if err != nil {
			return reject(fmt.Errorf("storage: encode connect session %q: %w", next.ID, err))
		}
		if err := writeSessionTx(tx, tb, old, next, val); err != nil {
			return err
		}
		out = next
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	return cloneSession(out), rec, nil
}

// CompleteConnectSession is UpdateConnectSession(cs) and
// PutIntegration(in) in one transaction with one audit event.
// A nil build commits no event (storage.AuditFunc).
func (s *Store) CompleteConnectSession(ctx context.Context, cs storage.ConnectSession, in storage.Integration, build storage.AuditFunc) (storage.ConnectSession, storage.Integration, storage.AuditRecord, error) {
	fail := func(err error) (storage.ConnectSession, storage.Integration, storage.AuditRecord, error) {
		return storage.ConnectSession{}, storage.Integration{}, storage.AuditRecord{}, err
	}
	if err := storage.CheckConnectSession(cs); err != nil {
		return fail(err)
	}
	in, err := storage.CheckCompletedIntegration(cs, in)
	if err != nil {
		return fail(err)
	}
	prepared, err := prepareIntegrations(cs.TenantID, []storage.Integration{in})
	if err != nil {
		return fail(err)
	}
	cs = cloneSession(cs)
	var (
		outS storage.ConnectSession
		outI []storage.Integration
		rec  storage.AuditRecord
	)
	err = s.write(ctx, func(tx *bbolt.Tx) error {
		outS, outI, rec = storage.ConnectSession{}, nil, storage.AuditRecord{}
		old, tb, err := checkUpdateTx(tx, cs)
		if err != nil {
			return err
		}
		next := cs
		next.Revision = old.Revision + 1
		val, err := encodeConnectSession(next)
		if err != nil {
			return reject(fmt.Errorf("storage: encode connect session %q: %w", next.ID, err))
		}
		// putIntegrationsTx rejects only before it writes, and nothing is
		// written before it; from here on every failure rolls back.
		if outI, err = putIntegrationsTx(tx, cs.TenantID, prepared); err != nil {
			return err
		}
		if err := writeSessionTx(tx, tb, old, next, val); err != nil {
			return err
		}
		outS = next
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return fail(err)
	}
	return cloneSession(outS), cloneIntegration(outI[0]), rec, nil
}

// DeleteConnectSession removes the session and its index entries;
// storage.ErrNotFound if absent (or the tenant is unknown).
// A nil build commits no event (storage.AuditFunc).
func (s *Store) DeleteConnectSession(ctx context.Context, tenantID, id string, build storage.AuditFunc) (storage.AuditRecord, error) {
	if !storage.ValidID(tenantID) {
		return storage.AuditRecord{}, invalidID("tenant", tenantID)
	}
	if !storage.ValidID(id) {
		return storage.AuditRecord{}, invalidID("connect session", id)
	}
	var rec storage.AuditRecord
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		rec = storage.AuditRecord{}
		tb := tx.Bucket(tenantBucket(tenantID))
		if tb == nil {
			return reject(sessionNotFound(id))
		}
		old, ok, err := loadSession(tb, tenantID, id)
		if err != nil {
			// The index entries to remove are in the record: fail closed.
			return reject(err)
		}
		if !ok {
			return reject(sessionNotFound(id))
		}
		if err := writeSessionTx(tx, tb, old, storage.ConnectSession{}, nil); err != nil {
			return err
		}
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return storage.AuditRecord{}, err
	}
	return rec, nil
}

// ListConnectSessions lists a tenant's sessions sorted by id; an unknown
// tenant lists nothing.
func (s *Store) ListConnectSessions(ctx context.Context, tenantID string) ([]storage.ConnectSession, error) {
	if !storage.ValidID(tenantID) {
		return nil, invalidID("tenant", tenantID)
	}
	out := []storage.ConnectSession{}
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		out = out[:0]
		tb := tx.Bucket(tenantBucket(tenantID))
		if tb == nil {
			return nil
		}
		cb := tb.Bucket(bucketConnect)
		if cb == nil {
			return nil
		}
		n := 0
		return cb.ForEach(func(k, v []byte) error {
			if n++; n%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if v == nil {
				return corrupt("tenant %q: unexpected bucket %q among connect sessions", tenantID, k)
			}
			cs, err := decodeConnectSession(tenantID, string(k), v)
			if err != nil {
				return err
			}
			out = append(out, cs)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
