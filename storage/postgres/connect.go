package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/vaultd/vaultd/storage"
)

type sessionRecord struct {
	V int `json:"v"`
	storage.ConnectSession
}

// sessionNotFound is the same for a missing tenant and a missing id.
func sessionNotFound(id string) error {
	return fmt.Errorf("%w: connect session %q", storage.ErrNotFound, id)
}

func decodeSession(tenantID, id string, val []byte, rev int64) (storage.ConnectSession, error) {
	var r sessionRecord
	what := fmt.Sprintf("connect session %q of tenant %q", id, tenantID)
	if err := decode(what, val, &r, func(r *sessionRecord) int { return r.V }); err != nil {
		return storage.ConnectSession{}, err
	}
	if r.ID != id || r.TenantID != tenantID {
		return storage.ConnectSession{}, corrupt("%s: record names %q of tenant %q", what, r.ID, r.TenantID)
	}
	r.Revision = uint64(rev)
	return r.ConnectSession, nil
}

func encodeSession(cs storage.ConnectSession) ([]byte, error) {
	return encode(sessionRecord{V: recordVersion, ConnectSession: cs})
}

// indexDigests indexes cs's digests for cs, refusing with ErrExists one
// held by another session (one held by cs itself stays).
func indexDigests(ctx context.Context, tx pgx.Tx, cs storage.ConnectSession) error {
	for _, d := range cs.Digests() {
		tag, err := tx.Exec(ctx, `INSERT INTO connect_digests (digest, tenant_id, id) VALUES ($1, $2, $3)
			ON CONFLICT (digest) DO UPDATE SET digest = EXCLUDED.digest
			WHERE connect_digests.tenant_id = EXCLUDED.tenant_id AND connect_digests.id = EXCLUDED.id`,
			d, cs.TenantID, cs.ID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: a digest of connect session %q is already indexed", storage.ErrExists, cs.ID)
		}
	}
	return nil
}

// CreateConnectSession stores cs with Revision 1 and indexes its digests.
func (s *Store) CreateConnectSession(ctx context.Context, cs storage.ConnectSession, build storage.AuditFunc) (storage.ConnectSession, storage.AuditRecord, error) {
	if err := storage.CheckConnectSession(cs); err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	cs.Revision = 1
	val, err := encodeSession(cs)
	if err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	rec, err := s.write(ctx, cs.TenantID, build, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO connect_sessions (tenant_id, id, record, revision, expires_at)
			VALUES ($1, $2, $3, 1, $4) ON CONFLICT (tenant_id, id) DO NOTHING`, cs.TenantID, cs.ID, val, cs.ExpiresAt)
		if err != nil {
			return err // a missing tenant: 23503, ErrTenantNotFound
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: connect session %q", storage.ErrExists, cs.ID)
		}
		return indexDigests(ctx, tx, cs)
	})
	if err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	out, err := decodeSession(cs.TenantID, cs.ID, val, 1)
	return out, rec, err
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
	err := s.read(ctx, txOpts{tenant: tenantID, readOnly: true}, func(tx pgx.Tx) error {
		var err error
		out, err = getSession(ctx, tx, tenantID, id)
		return err
	})
	return out, err
}

func getSession(ctx context.Context, tx pgx.Tx, tenantID, id string) (storage.ConnectSession, error) {
	var val []byte
	var rev int64
	err := tx.QueryRow(ctx, `SELECT record, revision FROM connect_sessions WHERE tenant_id = $1 AND id = $2`, tenantID, id).Scan(&val, &rev)
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.ConnectSession{}, sessionNotFound(id)
	}
	if err != nil {
		return storage.ConnectSession{}, err
	}
	return decodeSession(tenantID, id, val, rev)
}

// FindConnectSession returns the session whose LinkHash or StateHash is
// digest, whatever its tenant. The index names the tenant, which is then
// set for row-level security; both reads share one snapshot (REPEATABLE
// READ), so a concurrent update cannot look like a corrupt index.
func (s *Store) FindConnectSession(ctx context.Context, digest []byte) (storage.ConnectSession, error) {
	if err := storage.CheckConnectDigest(digest); err != nil {
		return storage.ConnectSession{}, err
	}
	var out storage.ConnectSession
	err := s.read(ctx, txOpts{readOnly: true, repeatable: true}, func(tx pgx.Tx) error {
		var tenantID, id string
		err := tx.QueryRow(ctx, `SELECT tenant_id, id FROM connect_digests WHERE digest = $1`, digest).Scan(&tenantID, &id)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: connect session", storage.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('vaultd.tenant', $1, true)`, tenantID); err != nil {
			return err
		}
		cs, err := getSession(ctx, tx, tenantID, id)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && !bytes.Equal(cs.LinkHash, digest) && !bytes.Equal(cs.StateHash, digest)) {
			return corrupt("digest index names connect session %q of tenant %q, which does not carry it", id, tenantID)
		}
		out = cs
		return err
	})
	return out, err
}

// updateSession is UpdateConnectSession's statements: the CAS, then the
// digest index moved to next's digests.
func updateSession(ctx context.Context, tx pgx.Tx, next storage.ConnectSession, val []byte, based uint64) error {
	tag, err := tx.Exec(ctx, `UPDATE connect_sessions SET record = $3, revision = revision + 1, expires_at = $5
		WHERE tenant_id = $1 AND id = $2 AND revision = $4`, next.TenantID, next.ID, val, int64(based), next.ExpiresAt)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return casMiss(ctx, tx, `SELECT revision FROM connect_sessions WHERE tenant_id = $1 AND id = $2`, []any{next.TenantID, next.ID},
			sessionNotFound(next.ID), fmt.Sprintf("connect session %q", next.ID), based)
	}
	keep := next.Digests()
	if keep == nil {
		keep = [][]byte{}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM connect_digests WHERE tenant_id = $1 AND id = $2 AND digest <> ALL($3::bytea[])`,
		next.TenantID, next.ID, keep); err != nil {
		return err
	}
	return indexDigests(ctx, tx, next)
}

// UpdateConnectSession replaces the session if cs.Revision equals the
// stored one, moving the digest index with it.
func (s *Store) UpdateConnectSession(ctx context.Context, cs storage.ConnectSession, build storage.AuditFunc) (storage.ConnectSession, storage.AuditRecord, error) {
	if err := storage.CheckConnectSession(cs); err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	based := cs.Revision
	cs.Revision = based + 1
	val, err := encodeSession(cs)
	if err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	rec, err := s.write(ctx, cs.TenantID, build, func(tx pgx.Tx) error {
		return updateSession(ctx, tx, cs, val, based)
	})
	if err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	out, err := decodeSession(cs.TenantID, cs.ID, val, int64(cs.Revision))
	return out, rec, err
}

// CompleteConnectSession is UpdateConnectSession(cs) and
// PutIntegration(in) in one transaction with one audit event.
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
	in, err = prepareIntegration(cs.TenantID, in)
	if err != nil {
		return fail(err)
	}
	based := cs.Revision
	cs.Revision = based + 1
	val, err := encodeSession(cs)
	if err != nil {
		return fail(err)
	}
	var outI storage.Integration
	rec, err := s.write(ctx, cs.TenantID, build, func(tx pgx.Tx) error {
		if err := updateSession(ctx, tx, cs, val, based); err != nil {
			return err
		}
		var err error
		outI, err = upsertIntegration(ctx, tx, in)
		return err
	})
	if err != nil {
		return fail(err)
	}
	outS, err := decodeSession(cs.TenantID, cs.ID, val, int64(cs.Revision))
	if err != nil {
		return fail(err)
	}
	return outS, outI, rec, nil
}

// DeleteConnectSession removes the session (its digests cascade);
// storage.ErrNotFound if absent.
func (s *Store) DeleteConnectSession(ctx context.Context, tenantID, id string, build storage.AuditFunc) (storage.AuditRecord, error) {
	if !storage.ValidID(tenantID) {
		return storage.AuditRecord{}, invalidID("tenant", tenantID)
	}
	if !storage.ValidID(id) {
		return storage.AuditRecord{}, invalidID("connect session", id)
	}
	return s.write(ctx, tenantID, build, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM connect_sessions WHERE tenant_id = $1 AND id = $2`, tenantID, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return sessionNotFound(id)
		}
		return nil
	})
}

// ListConnectSessions lists a tenant's sessions sorted by id; an unknown
// tenant lists nothing.
func (s *Store) ListConnectSessions(ctx context.Context, tenantID string) ([]storage.ConnectSession, error) {
	if !storage.ValidID(tenantID) {
		return nil, invalidID("tenant", tenantID)
	}
	out := []storage.ConnectSession{}
	err := s.read(ctx, txOpts{tenant: tenantID, readOnly: true}, func(tx pgx.Tx) error {
		out = out[:0] // a retried read starts over
		rows, err := tx.Query(ctx, `SELECT id, record, revision FROM connect_sessions WHERE tenant_id = $1 ORDER BY id`, tenantID)
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
			cs, err := decodeSession(tenantID, id, val, rev)
			if err != nil {
				return err
			}
			out = append(out, cs)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
