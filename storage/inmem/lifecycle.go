package inmem

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// OffboardTenant deletes the tenant with its integrations, connect
// sessions and their digest index entries, and keeps a tombstone of its
// id, all under one lock with its audit event. A nil build commits no
// event (storage.AuditFunc).
func (s *Store) OffboardTenant(ctx context.Context, id string, build storage.AuditFunc) (storage.AuditRecord, error) {
	if !storage.ValidID(id) {
		return storage.AuditRecord{}, invalidID("tenant", id)
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.AuditRecord{}, err
	}
	defer unlock()
	ts, ok := s.tenants[id]
	if !ok {
		return storage.AuditRecord{}, tenantNotFound(id)
	}
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return storage.AuditRecord{}, err
	}
	for _, cs := range ts.sessions {
		s.reindex(cs, storage.ConnectSession{})
	}
	delete(s.tenants, id)
	s.offboarded[id] = struct{}{}
	s.commitAudit(pending)
	return rec, nil
}

// ListOffboarded lists the offboarded tenant ids, sorted.
func (s *Store) ListOffboarded(ctx context.Context) ([]string, error) {
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return sortedKeys(s.offboarded), nil
}

func revocationNotFound(id string) error {
	return fmt.Errorf("%w: revocation %q", storage.ErrNotFound, id)
}

func cloneRevocation(r storage.Revocation) storage.Revocation {
	r.Sealed = bytes.Clone(r.Sealed)
	return r
}

// PutRevocation stores r with Revision 1; storage.ErrExists if the id is
// taken. A nil build commits no event (storage.AuditFunc).
func (s *Store) PutRevocation(ctx context.Context, r storage.Revocation, build storage.AuditFunc) (storage.Revocation, storage.AuditRecord, error) {
	if err := storage.CheckRevocation(r); err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	r = cloneRevocation(r)
	r.Revision = 1
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	defer unlock()
	if _, ok := s.revocations[r.ID]; ok {
		return storage.Revocation{}, storage.AuditRecord{}, fmt.Errorf("%w: revocation %q", storage.ErrExists, r.ID)
	}
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	s.revocations[r.ID] = r
	s.commitAudit(pending)
	return cloneRevocation(r), rec, nil
}

// ListRevocations lists every pending revocation sorted by id.
func (s *Store) ListRevocations(ctx context.Context) ([]storage.Revocation, error) {
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := make([]storage.Revocation, 0, len(s.revocations))
	for _, id := range sortedKeys(s.revocations) {
		if len(out)%ctxCheckEvery == ctxCheckEvery-1 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		out = append(out, cloneRevocation(s.revocations[id]))
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
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	defer unlock()
	old, ok := s.revocations[r.ID]
	if !ok {
		return storage.Revocation{}, storage.AuditRecord{}, revocationNotFound(r.ID)
	}
	if old.Revision != r.Revision {
		return storage.Revocation{}, storage.AuditRecord{}, fmt.Errorf("%w: revocation %q is at revision %d, update was based on %d",
			storage.ErrConflict, r.ID, old.Revision, r.Revision)
	}
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return storage.Revocation{}, storage.AuditRecord{}, err
	}
	r.Revision = old.Revision + 1
	s.revocations[r.ID] = r
	s.commitAudit(pending)
	return cloneRevocation(r), rec, nil
}

// DeleteRevocation removes it; storage.ErrNotFound if absent. A nil build
// commits no event (storage.AuditFunc).
func (s *Store) DeleteRevocation(ctx context.Context, id string, build storage.AuditFunc) (storage.AuditRecord, error) {
	if !storage.ValidID(id) {
		return storage.AuditRecord{}, invalidID("revocation", id)
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.AuditRecord{}, err
	}
	defer unlock()
	if _, ok := s.revocations[id]; !ok {
		return storage.AuditRecord{}, revocationNotFound(id)
	}
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return storage.AuditRecord{}, err
	}
	delete(s.revocations, id)
	s.commitAudit(pending)
	return rec, nil
}

func deliveryNotFound(id string) error {
	return fmt.Errorf("%w: delivery %q", storage.ErrNotFound, id)
}

func cloneDelivery(d storage.Delivery) storage.Delivery {
	d.Body = bytes.Clone(d.Body)
	return d
}

// EnqueueDeliveries stores ds (each with Revision 1) and moves the webhook
// cursor, under one lock: all or nothing.
func (s *Store) EnqueueDeliveries(ctx context.Context, cursor uint64, ds []storage.Delivery) error {
	prepared := make([]storage.Delivery, len(ds))
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
		prepared[i] = d
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if cursor < s.cursor {
		return fmt.Errorf("%w: webhook cursor %d is below the stored %d", storage.ErrInvalidRecord, cursor, s.cursor)
	}
	for _, d := range prepared {
		if _, ok := s.deliveries[d.ID]; ok {
			return fmt.Errorf("%w: delivery %q", storage.ErrExists, d.ID)
		}
	}
	for _, d := range prepared {
		s.deliveries[d.ID] = d
	}
	s.cursor = cursor
	return nil
}

// WebhookCursor returns the stored cursor (0 when never set).
func (s *Store) WebhookCursor(ctx context.Context) (uint64, error) {
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return 0, err
	}
	defer unlock()
	return s.cursor, nil
}

// GetDelivery returns storage.ErrNotFound for an unknown id.
func (s *Store) GetDelivery(ctx context.Context, id string) (storage.Delivery, error) {
	if !storage.ValidID(id) {
		return storage.Delivery{}, invalidID("delivery", id)
	}
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return storage.Delivery{}, err
	}
	defer unlock()
	d, ok := s.deliveries[id]
	if !ok {
		return storage.Delivery{}, deliveryNotFound(id)
	}
	return cloneDelivery(d), nil
}

// ListDeliveries lists deliveries of that status ("" = any), ordered by
// NextAttemptAt then ID, at most limit (<= 0: all).
func (s *Store) ListDeliveries(ctx context.Context, status string, limit int) ([]storage.Delivery, error) {
	if err := storage.CheckDeliveryStatusFilter(status); err != nil {
		return nil, err
	}
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := []storage.Delivery{}
	n := 0
	for _, d := range s.deliveries {
		if n++; n%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		if status == "" || d.Status == status {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, storage.CompareDeliveries)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	for i := range out {
		out[i] = cloneDelivery(out[i])
	}
	return out, nil
}

// UpdateDelivery replaces the delivery if d.Revision equals the stored
// one. A nil build commits no event (storage.AuditFunc).
func (s *Store) UpdateDelivery(ctx context.Context, d storage.Delivery, build storage.AuditFunc) (storage.Delivery, storage.AuditRecord, error) {
	if err := storage.CheckDelivery(d); err != nil {
		return storage.Delivery{}, storage.AuditRecord{}, err
	}
	d = cloneDelivery(d)
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.Delivery{}, storage.AuditRecord{}, err
	}
	defer unlock()
	old, ok := s.deliveries[d.ID]
	if !ok {
		return storage.Delivery{}, storage.AuditRecord{}, deliveryNotFound(d.ID)
	}
	if old.Revision != d.Revision {
		return storage.Delivery{}, storage.AuditRecord{}, fmt.Errorf("%w: delivery %q is at revision %d, update was based on %d",
			storage.ErrConflict, d.ID, old.Revision, d.Revision)
	}
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return storage.Delivery{}, storage.AuditRecord{}, err
	}
	d.Revision = old.Revision + 1
	s.deliveries[d.ID] = d
	s.commitAudit(pending)
	return cloneDelivery(d), rec, nil
}

// PruneDeliveries deletes up to max delivered or failed deliveries last
// updated before `before` (in id order, so a repeated call proceeds).
func (s *Store) PruneDeliveries(ctx context.Context, before time.Time, max int) (int, error) {
	if max < 1 {
		return 0, fmt.Errorf("%w: prune at most %d deliveries", storage.ErrInvalidRecord, max)
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return 0, err
	}
	defer unlock()
	n := 0
	for _, id := range sortedKeys(s.deliveries) {
		if n >= max {
			break
		}
		d := s.deliveries[id]
		if d.Status != storage.DeliveryPending && d.UpdatedAt.Before(before) {
			delete(s.deliveries, id)
			n++
		}
	}
	return n, nil
}

// backupLifecycle emits Backup's offboarded, revocation, delivery and
// webhook_cursor lines. The caller holds the read lock.
func (s *Store) backupLifecycle(emit func(any) error) error {
	for _, id := range sortedKeys(s.offboarded) {
		if err := emit(struct {
			Kind     string `json:"kind"`
			TenantID string `json:"tenant_id"`
		}{"offboarded", id}); err != nil {
			return err
		}
	}
	for _, id := range sortedKeys(s.revocations) {
		if err := emit(struct {
			Kind       string             `json:"kind"`
			Revocation storage.Revocation `json:"revocation"`
		}{"revocation", s.revocations[id]}); err != nil {
			return err
		}
	}
	for _, id := range sortedKeys(s.deliveries) {
		if err := emit(struct {
			Kind     string           `json:"kind"`
			Delivery storage.Delivery `json:"delivery"`
		}{"delivery", s.deliveries[id]}); err != nil {
			return err
		}
	}
	return emit(struct {
		Kind string `json:"kind"`
		Seq  uint64 `json:"seq"`
	}{"webhook_cursor", s.cursor})
}
