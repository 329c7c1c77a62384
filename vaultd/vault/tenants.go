package vault

import (
	"context"
	"errors"
	"fmt"

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
		return storage.Tenant{}, ErrTenantExists
	}
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return t, nil
}

// tenantWrite commits a tenant change and its audit event ev together
// (storage's audited writes through audit.Log.RecordWith): a key change
// that cannot be audited does not happen.
func (s *Service) tenantWrite(ctx context.Context, ev audit.Event, write func(build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error)) (storage.Tenant, error) {
	var out storage.Tenant
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
// "rewrap ...", also when nothing changed.
func (s *Service) RewrapTenant(ctx context.Context, c Caller, id string, opts ...WriteOption) (storage.Tenant, int, error) {
	t, err := s.GetTenant(ctx, id)
	if err != nil {
		return t, 0, err
	}
	current := s.kekVersion()
	n := 0
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
	ev := c.success(audit.ActionKeyRotate, id, "", fmt.Sprintf("rewrap deks=%d kek_version=%d", n, t.KEKVersion), opts)
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
func (s *Service) tenant(ctx context.Context, id string) (storage.Tenant, error) {
	t, err := s.store.GetTenant(ctx, id)
	if errors.Is(err, storage.ErrTenantNotFound) || errors.Is(err, storage.ErrNotFound) {
		return storage.Tenant{}, ErrNotFound
	}
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return t, nil
}
