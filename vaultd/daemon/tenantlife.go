package daemon

import (
	"context"
	"time"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/vaultd/config"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// The tenant lifecycle's background work: the revocation queue's retries,
// finishing a crypto-shred an HSM outage interrupted, and the start-up
// migration of tenants created before tenant keys existed.

// lifecycleSettings maps [lifecycle] to the service's settings.
func lifecycleSettings(cfg *config.Config) vault.Lifecycle {
	l := cfg.Lifecycle
	return vault.Lifecycle{RevocationRetryFor: l.RevocationRetryFor.Duration(), RevocationRetryInitial: l.RevocationRetryInitial.Duration()}
}

// revocationRetryEvery is how often the loop looks for due revocations:
// revocation_retry_initial (so a first retry is on time), between 1s and
// 30s.
func revocationRetryEvery(initial time.Duration) time.Duration {
	return max(time.Second, min(30*time.Second, initial))
}

// revocationLoop runs until ctx ends. It starts with the start-up work
// (off the path to READY: the API serves meanwhile): destroying the keys
// of offboarded tenants that still have one, then giving every tenant's
// DEKs the tenant layer (vault.MigrateTenantKeys, one tenant at a time,
// logged). Then, every revocationRetryEvery, it retries the due
// revocations (vault.RetryRevocations at now()), sets
// vaultd_revocations_pending, and retries a shred that failed since. It
// reads [lifecycle] every round, so a reload applies. Failures are logged
// and retried; they never stop the daemon. The retries run under the
// revocations lease (lease.go): on one node of a cluster at a time, so a
// queued revocation is sent by one node; vaultd_revocations_pending is
// set by the node that ran the last round.
func (d *daemon) revocationLoop(ctx context.Context, now func() time.Time) {
	if n, err := d.svc.FinishShreds(ctx); err != nil {
		d.log.Warn("offboarded tenants' keys: destroying failed; retried", "err", err)
	} else if n > 0 {
		d.log.Info("offboarded tenants' keys destroyed", "count", n)
	}
	start := now()
	if n, err := d.svc.MigrateTenantKeys(ctx); err != nil {
		d.log.Warn("tenant key migration incomplete; the rest is retried at the next start or by POST /v1/tenants/{id}/rewrap", "tenants", n, "err", err)
	} else if n > 0 {
		d.log.Info("tenant key migration done", "tenants", n, "duration_ms", now().Sub(start).Milliseconds())
	}
	l := d.newLeaser()
	defer l.Close()
	var failing bool
	for {
		lc := lifecycleSettings(d.cfg.Load())
		d.svc.SetLifecycle(lc)
		d.leased(ctx, l, leaseRevocations, &failing, func() {
			res, err := d.svc.RetryRevocations(ctx, now())
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				d.log.Warn("revocation retry round failed", "err", err)
			default:
				d.metrics.SetRevocationsPending(res.Pending)
				if res.Revoked+res.Failed+res.Dropped > 0 {
					d.log.Info("revocations retried", "revoked", res.Revoked, "failed", res.Failed, "dropped", res.Dropped, "pending", res.Pending)
				}
			}
		})
		if ctx.Err() != nil {
			return
		}
		// A shred this node could not finish is its own (ShredPending is
		// this process's memory): retried here, whoever has the lease.
		if d.svc.ShredPending() {
			if _, err := d.svc.FinishShreds(ctx); err != nil && ctx.Err() == nil {
				d.log.Warn("offboarded tenants' keys: destroying failed; retried", "err", err)
			}
		}
		t := time.NewTimer(revocationRetryEvery(lc.RevocationRetryInitial))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// tenantCountingKeyring is a countingKeyring that keeps its keyring's
// tenant keys visible (envelope finds them by type assertion, which an
// embedded hsm.Keyring hides), counting their operations too.
type tenantCountingKeyring struct {
	*countingKeyring
	tk hsm.TenantKeyring
}

// withTenantKeys is c, still a hsm.TenantKeyring when kr is one.
func withTenantKeys(c *countingKeyring, kr hsm.Keyring) hsm.Keyring {
	tk, ok := kr.(hsm.TenantKeyring)
	if !ok {
		return c
	}
	return &tenantCountingKeyring{countingKeyring: c, tk: tk}
}

func (t *tenantCountingKeyring) CreateTenantKey(ctx context.Context, tenantID string) error {
	return t.tk.CreateTenantKey(ctx, tenantID)
}

func (t *tenantCountingKeyring) WrapForTenant(ctx context.Context, tenantID string, plaintext []byte) ([]byte, error) {
	t.ops.WithLabelValues("wrap").Inc()
	return t.tk.WrapForTenant(ctx, tenantID, plaintext)
}

func (t *tenantCountingKeyring) UnwrapForTenant(ctx context.Context, tenantID string, wrapped []byte) ([]byte, error) {
	t.ops.WithLabelValues("unwrap").Inc()
	return t.tk.UnwrapForTenant(ctx, tenantID, wrapped)
}

func (t *tenantCountingKeyring) DestroyTenantKey(ctx context.Context, tenantID string) error {
	return t.tk.DestroyTenantKey(ctx, tenantID)
}

func (t *tenantCountingKeyring) HasTenantKey(ctx context.Context, tenantID string) (bool, error) {
	return t.tk.HasTenantKey(ctx, tenantID)
}
