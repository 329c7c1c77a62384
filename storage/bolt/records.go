package bolt

import (
	"bytes"
	"context"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage"
)

// ctxCheckEvery is how many records a listing decodes between context checks.
const ctxCheckEvery = 64

func invalidID(kind, id string) error {
	// The id is echoed quoted (%q) so control characters cannot forge log lines.
	return fmt.Errorf("%w: %s id %q", storage.ErrInvalidID, kind, id)
}

// notFound is deliberately the same for a missing tenant and a missing id,
// so callers cannot probe which tenants exist or own an id.
func notFound(id string) error {
	return fmt.Errorf("%w: integration %q", storage.ErrNotFound, id)
}

func tenantNotFound(id string) error {
	return fmt.Errorf("%w: %q", storage.ErrTenantNotFound, id)
}

// integrationsOf resolves a tenant's integrations bucket: the only way any
// integration is reached. nil, nil if the tenant does not exist.
func integrationsOf(tx *bbolt.Tx, tenantID string) (*bbolt.Bucket, error) {
	tb := tx.Bucket(tenantBucket(tenantID))
	if tb == nil {
		return nil, nil
	}
	ib := tb.Bucket(bucketIntegrations)
	if ib == nil {
		return nil, corrupt("tenant %q: integrations bucket missing", tenantID)
	}
	return ib, nil
}

// CreateTenant stores t with Revision 1; storage.ErrExists if the id is taken.
// A nil build commits no event (storage.AuditFunc).
func (s *Store) CreateTenant(ctx context.Context, t storage.Tenant, build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error) {
	if !storage.ValidID(t.ID) {
		return storage.Tenant{}, storage.AuditRecord{}, invalidID("tenant", t.ID)
	}
	t = cloneTenant(t)
	t.Revision = 1
	val, err := encodeTenant(t)
	if err != nil {
		return storage.Tenant{}, storage.AuditRecord{}, fmt.Errorf("storage: encode tenant %q: %w", t.ID, err)
	}
	var rec storage.AuditRecord
	err = s.write(ctx, func(tx *bbolt.Tx) error {
		rec = storage.AuditRecord{}
		name := tenantBucket(t.ID)
		if tx.Bucket(name) != nil {
			return reject(fmt.Errorf("%w: tenant %q", storage.ErrExists, t.ID))
		}
		if isOffboarded(tx, t.ID) {
			return reject(fmt.Errorf("%w: tenant %q was offboarded; its id is not reused", storage.ErrExists, t.ID))
		}
		tb, err := tx.CreateBucket(name)
		if err != nil {
			return err
		}
		if _, err := tb.CreateBucket(bucketIntegrations); err != nil {
			return err
		}
		if err := tb.Put(keyTenant, val); err != nil {
			return err
		}
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return storage.Tenant{}, storage.AuditRecord{}, err
	}
	return cloneTenant(t), rec, nil
}

// GetTenant returns storage.ErrTenantNotFound for an unknown id.
func (s *Store) GetTenant(ctx context.Context, id string) (storage.Tenant, error) {
	if !storage.ValidID(id) {
		return storage.Tenant{}, invalidID("tenant", id)
	}
	var out storage.Tenant
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		tb := tx.Bucket(tenantBucket(id))
		if tb == nil {
			return tenantNotFound(id)
		}
		var err error
		out, err = decodeTenant(id, tb.Get(keyTenant))
		return err
	})
	return out, err
}

// ListTenants lists every tenant sorted by id (bbolt keys are sorted, and
// the common "t/" prefix preserves the order of the ids).
func (s *Store) ListTenants(ctx context.Context) ([]storage.Tenant, error) {
	out := []storage.Tenant{}
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		out = out[:0]
		prefix := []byte(tenantPrefix)
		c := tx.Cursor()
		n := 0
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if n++; n%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			id := string(k[len(prefix):])
			tb := tx.Bucket(k)
			if tb == nil {
				return corrupt("tenant %q: key is not a bucket", id)
			}
			t, err := decodeTenant(id, tb.Get(keyTenant))
			if err != nil {
				return err
			}
			out = append(out, t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateTenant replaces the tenant if t.Revision equals the stored one.
// A nil build commits no event (storage.AuditFunc).
func (s *Store) UpdateTenant(ctx context.Context, t storage.Tenant, build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error) {
	if !storage.ValidID(t.ID) {
		return storage.Tenant{}, storage.AuditRecord{}, invalidID("tenant", t.ID)
	}
	t = cloneTenant(t)
	want := t.Revision
	var (
		out storage.Tenant
		rec storage.AuditRecord
	)
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		out, rec = storage.Tenant{}, storage.AuditRecord{}
		tb := tx.Bucket(tenantBucket(t.ID))
		if tb == nil {
			return reject(tenantNotFound(t.ID))
		}
		h, err := decodeHeader(fmt.Sprintf("tenant %q", t.ID), tb.Get(keyTenant))
		if err != nil {
			return reject(err)
		}
		if h.Revision != want {
			return reject(fmt.Errorf("%w: tenant %q is at revision %d, update was based on %d", storage.ErrConflict, t.ID, h.Revision, want))
		}
		next := t
		next.Revision = h.Revision + 1
		val, err := encodeTenant(next)
		if err != nil {
			return reject(fmt.Errorf("storage: encode tenant %q: %w", t.ID, err))
		}
		if err := tb.Put(keyTenant, val); err != nil {
			return err
		}
		out = next
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return storage.Tenant{}, storage.AuditRecord{}, err
	}
	return cloneTenant(out), rec, nil
}

// prepare validates an integration for tenantID and fills its TenantID.
func prepareIntegration(tenantID string, in storage.Integration) (storage.Integration, error) {
	if !storage.ValidID(in.ID) {
		return storage.Integration{}, invalidID("integration", in.ID)
	}
	if in.TenantID != "" && in.TenantID != tenantID {
		return storage.Integration{}, fmt.Errorf("%w: integration %q names tenant %q but is written to tenant %q",
			storage.ErrInvalidRecord, in.ID, in.TenantID, tenantID)
	}
	in = cloneIntegration(in)
	in.TenantID = tenantID
	return in, nil
}

// PutIntegrations is PutIntegration for many records of one tenant in one
// transaction: all are written or none. A repeated id is applied in order.
func (s *Store) PutIntegrations(ctx context.Context, tenantID string, ins []storage.Integration) ([]storage.Integration, error) {
	prepared, err := prepareIntegrations(tenantID, ins)
	if err != nil {
		return nil, err
	}
	var out []storage.Integration
	err = s.write(ctx, func(tx *bbolt.Tx) error {
		var err error
		out, err = putIntegrationsTx(tx, tenantID, prepared)
		return err
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i] = cloneIntegration(out[i])
	}
	return out, nil
}

// PutIntegration creates or replaces an integration unconditionally; the
// stored revision becomes the previous one plus one (1 on create),
// whatever in.Revision says.
// A nil build commits no event (storage.AuditFunc).
func (s *Store) PutIntegration(ctx context.Context, tenantID string, in storage.Integration, build storage.AuditFunc) (storage.Integration, storage.AuditRecord, error) {
	prepared, err := prepareIntegrations(tenantID, []storage.Integration{in})
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	var (
		out []storage.Integration
		rec storage.AuditRecord
	)
	err = s.write(ctx, func(tx *bbolt.Tx) error {
		var err error
		out, rec = nil, storage.AuditRecord{}
		if out, err = putIntegrationsTx(tx, tenantID, prepared); err != nil {
			return err
		}
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	return cloneIntegration(out[0]), rec, nil
}

func prepareIntegrations(tenantID string, ins []storage.Integration) ([]storage.Integration, error) {
	if !storage.ValidID(tenantID) {
		return nil, invalidID("tenant", tenantID)
	}
	prepared := make([]storage.Integration, len(ins))
	for i, in := range ins {
		p, err := prepareIntegration(tenantID, in)
		if err != nil {
			return nil, err
		}
		prepared[i] = p
	}
	return prepared, nil
}

// putIntegrationsTx is PutIntegrations' transaction body.
func putIntegrationsTx(tx *bbolt.Tx, tenantID string, prepared []storage.Integration) ([]storage.Integration, error) {
	ib, err := integrationsOf(tx, tenantID)
	if err != nil {
		return nil, reject(err)
	}
	if ib == nil {
		return nil, reject(tenantNotFound(tenantID))
	}
	res := make([]storage.Integration, len(prepared))
	for i, rec := range prepared {
		rec.Revision = 1
		key := []byte(rec.ID)
		if old := ib.Get(key); old != nil {
			h, err := decodeHeader(fmt.Sprintf("integration %q of tenant %q", rec.ID, tenantID), old)
			if err != nil {
				// Fail closed rather than overwrite a record we cannot read.
				return nil, err
			}
			rec.Revision = h.Revision + 1
		}
		val, err := encodeIntegration(rec)
		if err != nil {
			return nil, fmt.Errorf("storage: encode integration %q: %w", rec.ID, err)
		}
		if err := ib.Put(key, val); err != nil {
			return nil, err
		}
		res[i] = rec
	}
	return res, nil
}

// GetIntegration returns storage.ErrNotFound for an unknown id or tenant.
func (s *Store) GetIntegration(ctx context.Context, tenantID, id string) (storage.Integration, error) {
	if !storage.ValidID(tenantID) {
		return storage.Integration{}, invalidID("tenant", tenantID)
	}
	if !storage.ValidID(id) {
		return storage.Integration{}, invalidID("integration", id)
	}
	var out storage.Integration
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		ib, err := integrationsOf(tx, tenantID)
		if err != nil {
			return err
		}
		if ib == nil {
			return notFound(id)
		}
		val := ib.Get([]byte(id))
		if val == nil {
			return notFound(id)
		}
		out, err = decodeIntegration(tenantID, id, val)
		return err
	})
	if err != nil {
		return storage.Integration{}, err
	}
	return out, nil
}

// ListIntegrations lists a tenant's integrations sorted by id;
// storage.ErrTenantNotFound for an unknown tenant.
func (s *Store) ListIntegrations(ctx context.Context, tenantID string) ([]storage.Integration, error) {
	if !storage.ValidID(tenantID) {
		return nil, invalidID("tenant", tenantID)
	}
	out := []storage.Integration{}
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		out = out[:0]
		ib, err := integrationsOf(tx, tenantID)
		if err != nil {
			return err
		}
		if ib == nil {
			return tenantNotFound(tenantID)
		}
		n := 0
		return ib.ForEach(func(k, v []byte) error {
			if n++; n%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if v == nil {
				return corrupt("tenant %q: unexpected bucket %q among integrations", tenantID, k)
			}
			in, err := decodeIntegration(tenantID, string(k), v)
			if err != nil {
				return err
			}
			out = append(out, in)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CompareAndSwapIntegration replaces the record if in.Revision equals the
// stored revision: storage.ErrConflict if not, storage.ErrNotFound if the
// record (or tenant) does not exist.
// A nil build commits no event (storage.AuditFunc).
func (s *Store) CompareAndSwapIntegration(ctx context.Context, tenantID string, in storage.Integration, build storage.AuditFunc) (storage.Integration, storage.AuditRecord, error) {
	if !storage.ValidID(tenantID) {
		return storage.Integration{}, storage.AuditRecord{}, invalidID("tenant", tenantID)
	}
	rec, err := prepareIntegration(tenantID, in)
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	want := rec.Revision
	var (
		out  storage.Integration
		arec storage.AuditRecord
	)
	err = s.write(ctx, func(tx *bbolt.Tx) error {
		out, arec = storage.Integration{}, storage.AuditRecord{}
		ib, err := integrationsOf(tx, tenantID)
		if err != nil {
			return reject(err)
		}
		if ib == nil {
			return reject(notFound(rec.ID))
		}
		key := []byte(rec.ID)
		old := ib.Get(key)
		if old == nil {
			return reject(notFound(rec.ID))
		}
		h, err := decodeHeader(fmt.Sprintf("integration %q of tenant %q", rec.ID, tenantID), old)
		if err != nil {
			return reject(err)
		}
		if h.Revision != want {
			return reject(fmt.Errorf("%w: integration %q is at revision %d, update was based on %d",
				storage.ErrConflict, rec.ID, h.Revision, want))
		}
		next := rec
		next.Revision = h.Revision + 1
		val, err := encodeIntegration(next)
		if err != nil {
			return reject(fmt.Errorf("storage: encode integration %q: %w", rec.ID, err))
		}
		if err := ib.Put(key, val); err != nil {
			return err
		}
		out = next
		return maybeAppendAudit(tx, build, &arec)
	})
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	return cloneIntegration(out), arec, nil
}

// DeleteIntegration removes the record; storage.ErrNotFound if absent (or
// the tenant is unknown).
// A nil build commits no event (storage.AuditFunc).
func (s *Store) DeleteIntegration(ctx context.Context, tenantID, id string, build storage.AuditFunc) (storage.AuditRecord, error) {
	if !storage.ValidID(tenantID) {
		return storage.AuditRecord{}, invalidID("tenant", tenantID)
	}
	if !storage.ValidID(id) {
		return storage.AuditRecord{}, invalidID("integration", id)
	}
	var rec storage.AuditRecord
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		rec = storage.AuditRecord{}
		ib, err := integrationsOf(tx, tenantID)
		if err != nil {
			return reject(err)
		}
		if ib == nil {
			return reject(notFound(id))
		}
		key := []byte(id)
		if ib.Get(key) == nil {
			return reject(notFound(id))
		}
		if err := ib.Delete(key); err != nil {
			return err
		}
		return maybeAppendAudit(tx, build, &rec)
	})
	if err != nil {
		return storage.AuditRecord{}, err
	}
	return rec, nil
}
