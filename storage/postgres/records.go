package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/vaultd/vaultd/storage"
)

// recordVersion is the "v" of every JSON record, as in bbolt.
const recordVersion = 1

type tenantRecord struct {
	V int `json:"v"`
	storage.Tenant
}

type integrationRecord struct {
	V int `json:"v"`
	storage.Integration
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{storage.ErrCorrupt}, args...)...)
}

func invalidID(kind, id string) error {
	return fmt.Errorf("%w: %s id %q", storage.ErrInvalidID, kind, id)
}

// notFound is the same for a missing tenant and a missing id, so callers
// cannot probe which tenants exist or own an id.
func notFound(id string) error {
	return fmt.Errorf("%w: integration %q", storage.ErrNotFound, id)
}

func tenantNotFound(id string) error {
	return fmt.Errorf("%w: %q", storage.ErrTenantNotFound, id)
}

// decode unmarshals a record column; what names it in an error (ids are
// not secret; the JSON error never echoes a whole value).
func decode[T any](what string, val []byte, v *T, version func(*T) int) error {
	if err := json.Unmarshal(val, v); err != nil {
		return corrupt("%s: %v", what, err)
	}
	if got := version(v); got != recordVersion {
		return corrupt("%s: record version %d not supported", what, got)
	}
	return nil
}

func decodeTenant(id string, val []byte, rev int64) (storage.Tenant, error) {
	var r tenantRecord
	if err := decode("tenant "+fmt.Sprintf("%q", id), val, &r, func(r *tenantRecord) int { return r.V }); err != nil {
		return storage.Tenant{}, err
	}
	if r.ID != id {
		return storage.Tenant{}, corrupt("tenant %q: record names tenant %q", id, r.ID)
	}
	r.Revision = uint64(rev)
	return r.Tenant, nil
}

func decodeIntegration(tenantID, id string, val []byte, rev int64) (storage.Integration, error) {
	var r integrationRecord
	what := fmt.Sprintf("integration %q of tenant %q", id, tenantID)
	if err := decode(what, val, &r, func(r *integrationRecord) int { return r.V }); err != nil {
		return storage.Integration{}, err
	}
	if r.ID != id || r.TenantID != tenantID {
		return storage.Integration{}, corrupt("%s: record names %q of tenant %q", what, r.ID, r.TenantID)
	}
	r.Revision = uint64(rev)
	return r.Integration, nil
}

func encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", storage.ErrInvalidRecord, err)
	}
	return b, nil
}

// withEvent runs write then, in the same transaction, the event build
// makes (appendEvent). A nil build commits no event.
func (s *Store) write(ctx context.Context, tenant string, build storage.AuditFunc, write func(pgx.Tx) error) (storage.AuditRecord, error) {
	var rec storage.AuditRecord
	err := s.run(ctx, txOpts{tenant: tenant}, func(tx pgx.Tx) error {
		if err := write(tx); err != nil {
			return err
		}
		var err error
		rec, err = appendEvent(ctx, tx, build)
		return err
	})
	if err != nil {
		return storage.AuditRecord{}, err
	}
	return rec, nil
}

// tenantLock serialises CreateTenant and OffboardTenant of one id, so a
// create that raced an offboarding sees its tombstone (READ COMMITTED
// takes a new snapshot per statement, after the lock).
func tenantLock(ctx context.Context, tx pgx.Tx, id string) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('vaultd/tenant/' || $1, 0))`, id)
	return err
}

// CreateTenant stores t with Revision 1; storage.ErrExists if the id is
// taken or was offboarded.
func (s *Store) CreateTenant(ctx context.Context, t storage.Tenant, build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error) {
	if !storage.ValidID(t.ID) {
		return storage.Tenant{}, storage.AuditRecord{}, invalidID("tenant", t.ID)
	}
	t.Revision = 1
	val, err := encode(tenantRecord{V: recordVersion, Tenant: t})
	if err != nil {
		return storage.Tenant{}, storage.AuditRecord{}, err
	}
	rec, err := s.write(ctx, "", build, func(tx pgx.Tx) error {
		if err := tenantLock(ctx, tx, t.ID); err != nil {
			return err
		}
		var gone bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM offboarded_tenants WHERE id = $1)`, t.ID).Scan(&gone); err != nil {
			return err
		}
		if gone {
			return fmt.Errorf("%w: tenant %q was offboarded; its id is not reused", storage.ErrExists, t.ID)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO tenants (id, record, revision) VALUES ($1, $2, 1) ON CONFLICT (id) DO NOTHING`, t.ID, val)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: tenant %q", storage.ErrExists, t.ID)
		}
		return nil
	})
	if err != nil {
		return storage.Tenant{}, storage.AuditRecord{}, err
	}
	out, err := decodeTenant(t.ID, val, 1)
	return out, rec, err
}

// GetTenant returns storage.ErrTenantNotFound for an unknown id.
func (s *Store) GetTenant(ctx context.Context, id string) (storage.Tenant, error) {
	if !storage.ValidID(id) {
		return storage.Tenant{}, invalidID("tenant", id)
	}
	var out storage.Tenant
	err := s.read(ctx, txOpts{readOnly: true}, func(tx pgx.Tx) error {
		var val []byte
		var rev int64
		err := tx.QueryRow(ctx, `SELECT record, revision FROM tenants WHERE id = $1`, id).Scan(&val, &rev)
		if errors.Is(err, pgx.ErrNoRows) {
			return tenantNotFound(id)
		}
		if err != nil {
			return err
		}
		out, err = decodeTenant(id, val, rev)
		return err
	})
	return out, err
}

// ListTenants lists every tenant sorted by id (byte order).
func (s *Store) ListTenants(ctx context.Context) ([]storage.Tenant, error) {
	out := []storage.Tenant{}
	err := s.read(ctx, txOpts{readOnly: true}, func(tx pgx.Tx) error {
		out = out[:0] // a retried read starts over
		rows, err := tx.Query(ctx, `SELECT id, record, revision FROM tenants ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var val []byte
			var rev int64
			if err := rows.Scan(&id, &val, &rev); err != nil {
				return err
			}
			t, err := decodeTenant(id, val, rev)
			if err != nil {
				return err
			}
			out = append(out, t)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// casMiss tells a missing row (notFound) from a revision conflict after
// an UPDATE ... WHERE revision = $n touched nothing.
func casMiss(ctx context.Context, tx pgx.Tx, query string, args []any, notFound error, what string, based uint64) error {
	var cur int64
	err := tx.QueryRow(ctx, query, args...).Scan(&cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %s is at revision %d, update was based on %d", storage.ErrConflict, what, cur, based)
}

// UpdateTenant replaces the tenant if t.Revision equals the stored one.
func (s *Store) UpdateTenant(ctx context.Context, t storage.Tenant, build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error) {
	if !storage.ValidID(t.ID) {
		return storage.Tenant{}, storage.AuditRecord{}, invalidID("tenant", t.ID)
	}
	based := t.Revision
	t.Revision = based + 1
	val, err := encode(tenantRecord{V: recordVersion, Tenant: t})
	if err != nil {
		return storage.Tenant{}, storage.AuditRecord{}, err
	}
	rec, err := s.write(ctx, "", build, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE tenants SET record = $2, revision = revision + 1 WHERE id = $1 AND revision = $3`,
			t.ID, val, int64(based))
		if err != nil || tag.RowsAffected() == 1 {
			return err
		}
		return casMiss(ctx, tx, `SELECT revision FROM tenants WHERE id = $1`, []any{t.ID},
			tenantNotFound(t.ID), fmt.Sprintf("tenant %q", t.ID), based)
	})
	if err != nil {
		return storage.Tenant{}, storage.AuditRecord{}, err
	}
	out, err := decodeTenant(t.ID, val, int64(t.Revision))
	return out, rec, err
}

// prepareIntegration validates an integration for tenantID and fills its
// TenantID.
func prepareIntegration(tenantID string, in storage.Integration) (storage.Integration, error) {
	if !storage.ValidID(tenantID) {
		return storage.Integration{}, invalidID("tenant", tenantID)
	}
	if !storage.ValidID(in.ID) {
		return storage.Integration{}, invalidID("integration", in.ID)
	}
	if in.TenantID != "" && in.TenantID != tenantID {
		return storage.Integration{}, fmt.Errorf("%w: integration %q names tenant %q but is written to tenant %q",
			storage.ErrInvalidRecord, in.ID, in.TenantID, tenantID)
	}
	in.TenantID = tenantID
	return in, nil
}

// upsertIntegration is PutIntegration's statement: the record's revision
// (column and JSON) becomes the previous one plus one, 1 on create. A
// missing tenant is the foreign key's 23503, mapped to ErrTenantNotFound.
func upsertIntegration(ctx context.Context, tx pgx.Tx, in storage.Integration) (storage.Integration, error) {
	in.Revision = 1
	val, err := encode(integrationRecord{V: recordVersion, Integration: in})
	if err != nil {
		return storage.Integration{}, err
	}
	var rev int64
	err = tx.QueryRow(ctx, `INSERT INTO integrations (tenant_id, id, record, revision) VALUES ($1, $2, $3, 1)
		ON CONFLICT (tenant_id, id) DO UPDATE
		SET record = jsonb_set(EXCLUDED.record, '{revision}', to_jsonb(integrations.revision + 1)),
		    revision = integrations.revision + 1
		RETURNING revision`, in.TenantID, in.ID, val).Scan(&rev)
	if err != nil {
		return storage.Integration{}, err
	}
	return decodeIntegration(in.TenantID, in.ID, val, rev)
}

// PutIntegration creates or replaces an integration unconditionally.
func (s *Store) PutIntegration(ctx context.Context, tenantID string, in storage.Integration, build storage.AuditFunc) (storage.Integration, storage.AuditRecord, error) {
	in, err := prepareIntegration(tenantID, in)
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	var out storage.Integration
	rec, err := s.write(ctx, tenantID, build, func(tx pgx.Tx) error {
		var err error
		out, err = upsertIntegration(ctx, tx, in)
		return err
	})
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	return out, rec, nil
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
	err := s.read(ctx, txOpts{tenant: tenantID, readOnly: true}, func(tx pgx.Tx) error {
		var val []byte
		var rev int64
		err := tx.QueryRow(ctx, `SELECT record, revision FROM integrations WHERE tenant_id = $1 AND id = $2`, tenantID, id).Scan(&val, &rev)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound(id)
		}
		if err != nil {
			return err
		}
		out, err = decodeIntegration(tenantID, id, val, rev)
		return err
	})
	return out, err
}

// ListIntegrations lists a tenant's integrations sorted by id, in one
// statement (one snapshot); storage.ErrTenantNotFound for an unknown
// tenant.
func (s *Store) ListIntegrations(ctx context.Context, tenantID string) ([]storage.Integration, error) {
	if !storage.ValidID(tenantID) {
		return nil, invalidID("tenant", tenantID)
	}
	out := []storage.Integration{}
	err := s.read(ctx, txOpts{tenant: tenantID, readOnly: true}, func(tx pgx.Tx) error {
		out = out[:0] // a retried read starts over
		rows, err := tx.Query(ctx, `SELECT i.id, i.record, i.revision FROM tenants t
			LEFT JOIN integrations i ON i.tenant_id = t.id WHERE t.id = $1 ORDER BY i.id`, tenantID)
		if err != nil {
			return err
		}
		defer rows.Close()
		seen := false
		for rows.Next() {
			seen = true
			var id *string
			var val []byte
			var rev *int64
			if err := rows.Scan(&id, &val, &rev); err != nil {
				return err
			}
			if id == nil {
				continue // the tenant, with no integration
			}
			in, err := decodeIntegration(tenantID, *id, val, *rev)
			if err != nil {
				return err
			}
			out = append(out, in)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if !seen {
			return tenantNotFound(tenantID)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CompareAndSwapIntegration replaces the record if in.Revision equals the
// stored one: storage.ErrConflict if not, storage.ErrNotFound if gone.
func (s *Store) CompareAndSwapIntegration(ctx context.Context, tenantID string, in storage.Integration, build storage.AuditFunc) (storage.Integration, storage.AuditRecord, error) {
	in, err := prepareIntegration(tenantID, in)
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	based := in.Revision
	in.Revision = based + 1
	val, err := encode(integrationRecord{V: recordVersion, Integration: in})
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	rec, err := s.write(ctx, tenantID, build, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE integrations SET record = $3, revision = revision + 1
			WHERE tenant_id = $1 AND id = $2 AND revision = $4`, tenantID, in.ID, val, int64(based))
		if err != nil || tag.RowsAffected() == 1 {
			return err
		}
		return casMiss(ctx, tx, `SELECT revision FROM integrations WHERE tenant_id = $1 AND id = $2`, []any{tenantID, in.ID},
			notFound(in.ID), fmt.Sprintf("integration %q", in.ID), based)
	})
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	out, err := decodeIntegration(tenantID, in.ID, val, int64(in.Revision))
	return out, rec, err
}

// DeleteIntegration removes the record; storage.ErrNotFound if absent.
func (s *Store) DeleteIntegration(ctx context.Context, tenantID, id string, build storage.AuditFunc) (storage.AuditRecord, error) {
	if !storage.ValidID(tenantID) {
		return storage.AuditRecord{}, invalidID("tenant", tenantID)
	}
	if !storage.ValidID(id) {
		return storage.AuditRecord{}, invalidID("integration", id)
	}
	return s.write(ctx, tenantID, build, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM integrations WHERE tenant_id = $1 AND id = $2`, tenantID, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return notFound(id)
		}
		return nil
	})
}
