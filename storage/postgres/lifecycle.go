package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vaultd/vaultd/storage"
)

type revocationRecord struct {
	V int `json:"v"`
	storage.Revocation
}

type deliveryRecord struct {
	V int `json:"v"`
	storage.Delivery
}

// OffboardTenant deletes the tenant (its integrations, sessions and their
// digests cascade) and keeps a tombstone, with its event, in one
// transaction.
func (s *Store) OffboardTenant(ctx context.Context, id string, build storage.AuditFunc) (storage.AuditRecord, error) {
	if !storage.ValidID(id) {
		return storage.AuditRecord{}, invalidID("tenant", id)
	}
	return s.write(ctx, id, build, func(tx pgx.Tx) error {
		if err := tenantLock(ctx, tx, id); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM tenants WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return tenantNotFound(id)
		}
		_, err = tx.Exec(ctx, `INSERT INTO offboarded_tenants (id) VALUES ($1) ON CONFLICT (id) DO NOTHING`, id)
		return err
	})
}

// ListOffboarded lists the offboarded tenant ids, sorted.
func (s *Store) ListOffboarded(ctx context.Context) ([]string, error) {
	out := []string{}
	err := s.read(ctx, txOpts{readOnly: true}, func(tx pgx.Tx) error {
		out = out[:0] // a retried read starts over
		rows, err := tx.Query(ctx, `SELECT id FROM offboarded_tenants ORDER BY id`)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		out = append(out, ids...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func revocationNotFound(id string) error {
	return fmt.Errorf("%w: revocation %q", storage.ErrNotFound, id)
}

func decodeRevocation(id string, val []byte, rev int64) (storage.Revocation, error) {
	var r revocationRecord
	what := fmt.Sprintf("revocation %q", id)
	if err := decode(what, val, &r, func(r *revocationRecord) int { return r.V }); err != nil {
		return storage.Revocation{}, err
	}
	if r.ID != id {
		return storage.Revocation{}, corrupt("%s: record names %q", what, r.ID)
	}
	r.Revision = uint64(rev)
	return r.Revocation, nil
}

// PutRevocation stores r with Revision 1; storage.ErrExists if the id is
// taken.
func (s *Store) PutRevocation(ctx context.Context, r storage.Revocation, build storage.AuditFunc) (storage.Revocation, storage.AuditRecord, error) {
	if err := storage.CheckRevocation(r); err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	r.Revision = 1
	val, err := encode(revocationRecord{V: recordVersion, Revocation: r})
	if err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	rec, err := s.write(ctx, "", build, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO revocations (id, record, revision) VALUES ($1, $2, 1) ON CONFLICT (id) DO NOTHING`, r.ID, val)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: revocation %q", storage.ErrExists, r.ID)
		}
		return nil
	})
	if err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	out, err := decodeRevocation(r.ID, val, 1)
	return out, rec, err
}

// ListRevocations lists every pending revocation sorted by id.
func (s *Store) ListRevocations(ctx context.Context) ([]storage.Revocation, error) {
	out := []storage.Revocation{}
	err := s.read(ctx, txOpts{readOnly: true}, func(tx pgx.Tx) error {
		out = out[:0] // a retried read starts over
		rows, err := tx.Query(ctx, `SELECT id, record, revision FROM revocations ORDER BY id`)
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
			r, err := decodeRevocation(id, val, rev)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateRevocation replaces the revocation if r.Revision equals the
// stored one.
func (s *Store) UpdateRevocation(ctx context.Context, r storage.Revocation, build storage.AuditFunc) (storage.Revocation, storage.AuditRecord, error) {
	if err := storage.CheckRevocation(r); err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	based := r.Revision
	r.Revision = based + 1
	val, err := encode(revocationRecord{V: recordVersion, Revocation: r})
	if err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	rec, err := s.write(ctx, "", build, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE revocations SET record = $2, revision = revision + 1 WHERE id = $1 AND revision = $3`,
			r.ID, val, int64(based))
		if err != nil || tag.RowsAffected() == 1 {
			return err
		}
		return casMiss(ctx, tx, `SELECT revision FROM revocations WHERE id = $1`, []any{r.ID},
			revocationNotFound(r.ID), fmt.Sprintf("revocation %q", r.ID), based)
	})
	if err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	out, err := decodeRevocation(r.ID, val, int64(r.Revision))
	return out, rec, err
}

// DeleteRevocation removes it; storage.ErrNotFound if absent.
func (s *Store) DeleteRevocation(ctx context.Context, id string, build storage.AuditFunc) (storage.AuditRecord, error) {
	if !storage.ValidID(id) {
		return storage.AuditRecord{}, invalidID("revocation", id)
	}
	return s.write(ctx, "", build, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM revocations WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return revocationNotFound(id)
		}
		return nil
	})
}

func deliveryNotFound(id string) error {
	return fmt.Errorf("%w: delivery %q", storage.ErrNotFound, id)
}

func decodeDelivery(id string, val []byte, rev int64) (storage.Delivery, error) {
	var r deliveryRecord
	what := fmt.Sprintf("delivery %q", id)
	if err := decode(what, val, &r, func(r *deliveryRecord) int { return r.V }); err != nil {
		return storage.Delivery{}, err
	}
	if r.ID != id {
		return storage.Delivery{}, corrupt("%s: record names %q", what, r.ID)
	}
	r.Revision = uint64(rev)
	return r.Delivery, nil
}

// EnqueueDeliveries stores ds (each with Revision 1) and moves the webhook
// cursor, in one transaction: all or nothing.
func (s *Store) EnqueueDeliveries(ctx context.Context, cursor uint64, ds []storage.Delivery) error {
	seen := make(map[string]bool, len(ds))
	var (
		ids, vals, statuses []string
		ns, us              []int64
		nn, un              []int32
	)
	for _, d := range ds {
		if err := storage.CheckDelivery(d); err != nil {
			return err
		}
		if seen[d.ID] {
			return fmt.Errorf("%w: delivery %q is enqueued twice", storage.ErrExists, d.ID)
		}
		seen[d.ID] = true
		d.Revision = 1
		val, err := encode(deliveryRecord{V: recordVersion, Delivery: d})
		if err != nil {
			return err
		}
		ids, vals, statuses = append(ids, d.ID), append(vals, string(val)), append(statuses, d.Status)
		ns, nn = append(ns, d.NextAttemptAt.Unix()), append(nn, int32(d.NextAttemptAt.Nanosecond()))
		us, un = append(us, d.UpdatedAt.Unix()), append(un, int32(d.UpdatedAt.Nanosecond()))
	}
	if cursor > 1<<63-1 {
		return fmt.Errorf("%w: webhook cursor %d out of range", storage.ErrInvalidRecord, cursor)
	}
	return s.run(ctx, txOpts{}, func(tx pgx.Tx) error {
		var stored int64
		if err := tx.QueryRow(ctx, `SELECT cursor FROM webhook_meta FOR UPDATE`).Scan(&stored); err != nil {
			return err
		}
		if cursor < uint64(stored) {
			return fmt.Errorf("%w: webhook cursor %d is below the stored %d", storage.ErrInvalidRecord, cursor, stored)
		}
		if _, err := tx.Exec(ctx, `UPDATE webhook_meta SET cursor = $1`, int64(cursor)); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO webhook_deliveries
			(id, record, revision, status, next_attempt_s, next_attempt_ns, updated_s, updated_ns)
			SELECT id, record, 1, status, ns, nn, us, un
			FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::bigint[], $5::int[], $6::bigint[], $7::int[])
				AS d(id, record, status, ns, nn, us, un)`,
			ids, vals, statuses, ns, nn, us, un)
		return err // a taken id: 23505, ErrExists
	})
}

// WebhookCursor returns the stored cursor (0 when never set).
func (s *Store) WebhookCursor(ctx context.Context) (uint64, error) {
	var c int64
	err := s.read(ctx, txOpts{readOnly: true}, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT cursor FROM webhook_meta`).Scan(&c)
	})
	return uint64(c), err
}

// GetDelivery returns storage.ErrNotFound for an unknown id.
func (s *Store) GetDelivery(ctx context.Context, id string) (storage.Delivery, error) {
	if !storage.ValidID(id) {
		return storage.Delivery{}, invalidID("delivery", id)
	}
	var out storage.Delivery
	err := s.read(ctx, txOpts{readOnly: true}, func(tx pgx.Tx) error {
		var val []byte
		var rev int64
		err := tx.QueryRow(ctx, `SELECT record, revision FROM webhook_deliveries WHERE id = $1`, id).Scan(&val, &rev)
		if errors.Is(err, pgx.ErrNoRows) {
			return deliveryNotFound(id)
		}
		if err != nil {
			return err
		}
		out, err = decodeDelivery(id, val, rev)
		return err
	})
	return out, err
}

// ListDeliveries lists deliveries of that status ("" = any), ordered by
// NextAttemptAt then ID (the due index), at most limit (<= 0: all).
func (s *Store) ListDeliveries(ctx context.Context, status string, limit int) ([]storage.Delivery, error) {
	if err := storage.CheckDeliveryStatusFilter(status); err != nil {
		return nil, err
	}
	var lim *int64
	if limit > 0 {
		l := int64(limit)
		lim = &l
	}
	out := []storage.Delivery{}
	err := s.read(ctx, txOpts{readOnly: true}, func(tx pgx.Tx) error {
		out = out[:0] // a retried read starts over
		rows, err := tx.Query(ctx, `SELECT id, record, revision FROM webhook_deliveries
			WHERE $1 = '' OR status = $1 ORDER BY next_attempt_s, next_attempt_ns, id LIMIT $2`, status, lim)
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
			d, err := decodeDelivery(id, val, rev)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateDelivery replaces the delivery if d.Revision equals the stored
// one, with its status and times.
func (s *Store) UpdateDelivery(ctx context.Context, d storage.Delivery, build storage.AuditFunc) (storage.Delivery, storage.AuditRecord, error) {
	if err := storage.CheckDelivery(d); err != nil {
		return storage.Delivery{}, storage.AuditRecord{}, err
	}
	based := d.Revision
	d.Revision = based + 1
	val, err := encode(deliveryRecord{V: recordVersion, Delivery: d})
	if err != nil {
		return storage.Delivery{}, storage.AuditRecord{}, err
	}
	rec, err := s.write(ctx, "", build, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE webhook_deliveries SET record = $2, revision = revision + 1, status = $4,
			next_attempt_s = $5, next_attempt_ns = $6, updated_s = $7, updated_ns = $8
			WHERE id = $1 AND revision = $3`,
			d.ID, val, int64(based), d.Status,
			d.NextAttemptAt.Unix(), int32(d.NextAttemptAt.Nanosecond()), d.UpdatedAt.Unix(), int32(d.UpdatedAt.Nanosecond()))
		if err != nil || tag.RowsAffected() == 1 {
			return err
		}
		return casMiss(ctx, tx, `SELECT revision FROM webhook_deliveries WHERE id = $1`, []any{d.ID},
			deliveryNotFound(d.ID), fmt.Sprintf("delivery %q", d.ID), based)
	})
	if err != nil {
		return storage.Delivery{}, storage.AuditRecord{}, err
	}
	out, err := decodeDelivery(d.ID, val, int64(d.Revision))
	return out, rec, err
}

// PruneDeliveries deletes up to max delivered or failed deliveries last
// updated before `before` (in id order, so a repeated call proceeds).
func (s *Store) PruneDeliveries(ctx context.Context, before time.Time, max int) (int, error) {
	if max < 1 {
		return 0, fmt.Errorf("%w: prune at most %d deliveries", storage.ErrInvalidRecord, max)
	}
	var n int64
	err := s.run(ctx, txOpts{}, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM webhook_deliveries WHERE id IN (
			SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND (updated_s, updated_ns) < ($1, $2)
			ORDER BY id LIMIT $3)`, before.Unix(), int32(before.Nanosecond()), max)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}
