package storagetest

import (
	"context"

	"github.com/vaultd/vaultd/storage"
)

// Fixture writes to a store with a nil storage.AuditFunc: no audit event,
// for tests that set up or check state and have no event to record.
// Each write with an event is covered by the suite (PutIntegrationAudited,
// TenantAudited, CASAudited, AuditedMore, ...).
type Fixture struct{ s storage.Store }

// NoEvent returns a Fixture writing to s.
func NoEvent(s storage.Store) Fixture { return Fixture{s} }

// CreateTenant is s.CreateTenant with no event.
func (f Fixture) CreateTenant(ctx context.Context, t storage.Tenant) (storage.Tenant, error) {
	out, _, err := f.s.CreateTenant(ctx, t, nil)
	return out, err
}

// UpdateTenant is s.UpdateTenant with no event.
func (f Fixture) UpdateTenant(ctx context.Context, t storage.Tenant) (storage.Tenant, error) {
	out, _, err := f.s.UpdateTenant(ctx, t, nil)
	return out, err
}

// PutIntegration is s.PutIntegration with no event.
func (f Fixture) PutIntegration(ctx context.Context, tenantID string, in storage.Integration) (storage.Integration, error) {
	out, _, err := f.s.PutIntegration(ctx, tenantID, in, nil)
	return out, err
}

// CompareAndSwapIntegration is s.CompareAndSwapIntegration with no event.
func (f Fixture) CompareAndSwapIntegration(ctx context.Context, tenantID string, in storage.Integration) (storage.Integration, error) {
	out, _, err := f.s.CompareAndSwapIntegration(ctx, tenantID, in, nil)
	return out, err
}

// DeleteIntegration is s.DeleteIntegration with no event.
func (f Fixture) DeleteIntegration(ctx context.Context, tenantID, id string) error {
	_, err := f.s.DeleteIntegration(ctx, tenantID, id, nil)
	return err
}

// CreateConnectSession is s.CreateConnectSession with no event.
func (f Fixture) CreateConnectSession(ctx context.Context, cs storage.ConnectSession) (storage.ConnectSession, error) {
	out, _, err := f.s.CreateConnectSession(ctx, cs, nil)
	return out, err
}

// UpdateConnectSession is s.UpdateConnectSession with no event.
func (f Fixture) UpdateConnectSession(ctx context.Context, cs storage.ConnectSession) (storage.ConnectSession, error) {
	out, _, err := f.s.UpdateConnectSession(ctx, cs, nil)
	return out, err
}

// CompleteConnectSession is s.CompleteConnectSession with no event.
func (f Fixture) CompleteConnectSession(ctx context.Context, cs storage.ConnectSession, in storage.Integration) (storage.ConnectSession, storage.Integration, error) {
	outS, outI, _, err := f.s.CompleteConnectSession(ctx, cs, in, nil)
	return outS, outI, err
}

// DeleteConnectSession is s.DeleteConnectSession with no event.
func (f Fixture) DeleteConnectSession(ctx context.Context, tenantID, id string) error {
	_, err := f.s.DeleteConnectSession(ctx, tenantID, id, nil)
	return err
}
