package vault

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// CreateTenant provisions a tenant with a fresh DEK wrapped by the current
// KEK. Its tenant.create event commits in the same transaction as the
// tenant.
func (s *Service) CreateTenant(ctx context.Context, c Caller, id string, opts ...WriteOption) (storage.Tenant, error) {
	if !storage.ValidID(id) {
		return storage.Tenant{}, badRequest("invalid tenant id")
	}
	if _, err := s.store.GetTenant(ctx, id); err == nil {
		return storage.Tenant{}, ErrTenantExists
	} else if !errors.Is(err, storage.ErrTenantNotFound) {
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	dek, err := s.keys.NewDEK(ctx, id, 1)
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: new DEK: %w", ErrUnavailable, err)
	}
	now := s.now().UTC()
	t := storage.Tenant{
		ID: id, CreatedAt: now, Status: storage.TenantActive,
		KEKVersion: dek.KEKVersion, DEKVersion: 1, DEKs: []storage.WrappedDEK{dek},
	}
	ev := c.success(audit.ActionTenantCreate, id, "", fmt.Sprintf("kek_version=%d dek_version=%d", t.KEKVersion, t.DEKVersion), opts)
	t, err = s.tenantWrite(ctx, ev, func(build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error) {
		return s.store.CreateTenant(ctx, t, build)
	})
	if errors.Is(err, storage.ErrExists) {
		s.dropKeyOfOffboarded(ctx, id)
		return storage.Tenant{}, ErrTenantExists
	}
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return t, nil
}

// dropKeyOfOffboarded destroys the tenant key NewDEK just created for id
// when id is an offboarded tenant's (whose own key was destroyed, so any
// key now is this attempt's): an id that can never be created again must
// not leave a key in the HSM. A live tenant that won a race keeps its key.
func (s *Service) dropKeyOfOffboarded(ctx context.Context, id string) {
	ids, err := s.store.ListOffboarded(ctx)
	if err != nil || !slices.Contains(ids, id) {
		return
	}
	if err := s.keys.Shred(ctx, id); err != nil {
		s.life.shredPending.Store(true)
		s.log.WarnContext(ctx, "tenant key of an offboarded id not destroyed; retried later", "tenant_id", id, "err", err)
	}
}

// tenantWrite commits a tenant change and its audit event ev together
// (storage's audited writes through audit.Log.RecordWith): a key change
// that cannot be audited does not happen.
func (s *Service) tenantWrite(ctx context.Context, ev audit.Event, write func(build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error)) (storage.Tenant, error) {
	var out storage.Tenant
	// Dropped before and after: a read racing the write must not put the
	// old record back for the TTL.
	s.tenants.forget(ev.TenantID)
	defer s.tenants.forget(ev.TenantID)
	_, err := s.audit.RecordWith(ctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		out, rec, err = write(build)
		return rec, err
	})
	return out, err
}

// GetTenant returns a tenant record.
func (s *Service) GetTenant(ctx context.Context, id string) (storage.Tenant, error) {
	if !storage.ValidID(id) {
		return storage.Tenant{}, ErrTenantNotFound
	}
	t, err := s.store.GetTenant(ctx, id)
	if errors.Is(err, storage.ErrTenantNotFound) {
		return storage.Tenant{}, ErrTenantNotFound
	}
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return t, nil
}

// ListTenants lists tenants (operator).
func (s *Service) ListTenants(ctx context.Context) ([]storage.Tenant, error) {
	ts, err := s.store.ListTenants(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return ts, nil
}

// RotateDEK gives a tenant a new current DEK (wrapped by the current KEK);
// older versions stay to open existing records, which are re-sealed under
// the new DEK on their next write. Its key.rotate event commits with the
// change.
func (s *Service) RotateDEK(ctx context.Context, c Caller, id string, opts ...WriteOption) (storage.Tenant, error) {
	t, err := s.GetTenant(ctx, id)
	if err != nil {
		return t, err
	}
	next := t.DEKVersion + 1
	dek, err := s.keys.NewDEK(ctx, id, next)
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: new DEK: %w", ErrUnavailable, err)
	}
	t.DEKs = append(t.DEKs, dek)
	t.DEKVersion = next
	t.KEKVersion = dek.KEKVersion
	ev := c.success(audit.ActionKeyRotate, id, "", fmt.Sprintf("dek_version=%d kek_version=%d", t.DEKVersion, t.KEKVersion), opts)
	t, err = s.tenantWrite(ctx, ev, func(build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error) {
		return s.store.UpdateTenant(ctx, t, build)
	})
	if errors.Is(err, storage.ErrConflict) {
		return storage.Tenant{}, ErrConflict
	}
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return t, nil
}

// RewrapTenant re-wraps every DEK version of tenant id that is not under
// the current KEK (after a KEK rotation, before the old KEK is retired) and
// returns the tenant and how many DEKs changed. The DEKs themselves do not
// change, so no record needs re-sealing. Concurrent updates of the tenant
// answer ErrConflict (retry). It is audited as key.rotate with a detail
// "rewrap ...", also when nothing changed. DEKs still without the tenant
// layer get it too (UpgradeTenantKeys; the detail then ends "tenant key
// deks=N").
func (s *Service) RewrapTenant(ctx context.Context, c Caller, id string, opts ...WriteOption) (storage.Tenant, int, error) {
	t, err := s.GetTenant(ctx, id)
	if err != nil {
		return t, 0, err
	}
	// DEKs without the tenant layer get it (and so the current KEK too);
	// the others are re-wrapped under the current KEK.
	upgraded, err := s.upgradeDEKs(ctx, &t)
	if err != nil {
		return storage.Tenant{}, 0, err
	}
	current := s.kekVersion()
	n := upgraded
	for i, w := range t.DEKs {
		nw, changed, err := s.keys.RewrapDEK(ctx, id, w, current)
		if err != nil {
			return storage.Tenant{}, 0, fmt.Errorf("%w: rewrap: %w", ErrUnavailable, err)
		}
		if changed {
			t.DEKs[i] = nw
			n++
		}
	}
	if w, ok := t.CurrentDEK(); ok {
		t.KEKVersion = w.KEKVersion
	}
	detail := fmt.Sprintf("rewrap deks=%d kek_version=%d", n, t.KEKVersion)
	if upgraded > 0 {
		detail += fmt.Sprintf(" tenant key deks=%d", upgraded)
	}
	ev := c.success(audit.ActionKeyRotate, id, "", detail, opts)
	if n == 0 {
		// Nothing to change; the check itself is still on record.
		if _, err := s.audit.Record(ctx, ev); err != nil {
			return storage.Tenant{}, 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return t, 0, nil
	}
	t, err = s.tenantWrite(ctx, ev, func(build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error) {
		return s.store.UpdateTenant(ctx, t, build)
	})
	if errors.Is(err, storage.ErrConflict) {
		return storage.Tenant{}, 0, ErrConflict
	}
	if err != nil {
		return storage.Tenant{}, 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	// Same keys, new wrappings: drop the cached copies keyed to the old ones.
	s.keys.Evict(id)
	return t, n, nil
}

// tenant loads the tenant for an integration operation. A missing tenant
// answers ErrNotFound, exactly like a missing integration: callers must not
// learn which tenants exist.
//
// A disabled tenant answers ErrTenantDisabled: every app call loads its
// tenant here (directly, or through s.get), and so does every refresh,
// which is how a disabled tenant's tokens stay unused and unrefreshed.
func (s *Service) tenant(ctx context.Context, id string) (storage.Tenant, error) {
	t, err := s.tenantRecord(ctx, id)
	if err != nil {
		return storage.Tenant{}, err
	}
	if t.Status == storage.TenantDisabled {
		return storage.Tenant{}, ErrTenantDisabled
	}
	return t, nil
}
