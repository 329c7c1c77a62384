package vault

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/envelope"
)

// A tenant's life after creation: disabled (every app call refused, no
// background work, data kept) and enabled again, and offboarded: its
// tokens revoked at their providers, every record deleted in one
// transaction, its id never reused, and its HSM tenant key destroyed, so
// that no copy of the database taken before (a backup) can reveal its
// tokens, even with the same HSM.

// ErrTenantDisabled: the caller's tenant is disabled; the server answers
// 403 tenant_disabled. Only the tenant's own callers ever see it (an app
// call always acts for the caller's own tenant), so it reveals nothing
// about other tenants.
var ErrTenantDisabled = errors.New("vault: tenant disabled")

// Lifecycle holds the [lifecycle] settings the service uses.
type Lifecycle struct {
	// RevocationRetryFor is how long a failed revocation is retried before
	// it is dropped (DefaultRevocationRetryFor when zero).
	RevocationRetryFor time.Duration
	// RevocationRetryInitial is the delay before the first retry, doubled
	// after each failed one up to an hour (DefaultRevocationRetryInitial
	// when zero).
	RevocationRetryInitial time.Duration
	// Revocations is the revocation queue's store; nil: Options.Store's,
	// when it is a storage.RevocationStore (both backends are).
	Revocations storage.RevocationStore
}

// lifeState is the Service's part for this file and revocations.go.
type lifeState struct {
	keyring hsm.Keyring // seals queued revocations; tenant keys (HasTenantKey)
	revs    storage.RevocationStore
	policy  atomic.Pointer[Lifecycle]
	// retryMu keeps RetryRevocations rounds from overlapping.
	retryMu sync.Mutex
	// shredPending: a tenant key was not destroyed (ShredPending).
	shredPending atomic.Bool
}

// initLife sets up the lifecycle part from o (called by New).
func (s *Service) initLife(o Options) {
	s.life.keyring = o.Keyring
	s.life.revs = o.Lifecycle.Revocations
	if s.life.revs == nil {
		if rs, ok := o.Store.(storage.RevocationStore); ok {
			s.life.revs = rs
		}
	}
	s.SetLifecycle(o.Lifecycle)
}

// SetLifecycle swaps the revocation retry settings (a SIGHUP reload);
// the store is fixed at New and l.Revocations is ignored.
func (s *Service) SetLifecycle(l Lifecycle) {
	if l.RevocationRetryFor <= 0 {
		l.RevocationRetryFor = DefaultRevocationRetryFor
	}
	if l.RevocationRetryInitial <= 0 {
		l.RevocationRetryInitial = DefaultRevocationRetryInitial
	}
	l.Revocations = nil
	s.life.policy.Store(&l)
}

func (s *Service) lifecyclePolicy() Lifecycle {
	if p := s.life.policy.Load(); p != nil {
		return *p
	}
	return Lifecycle{RevocationRetryFor: DefaultRevocationRetryFor, RevocationRetryInitial: DefaultRevocationRetryInitial}
}

// DisableTenant disables tenant id: its app calls answer ErrTenantDisabled,
// background work (refresh-ahead, sweeps) skips it, and its data is kept.
// The change commits with its tenant.disable event. Disabling a disabled
// tenant answers it unchanged and records nothing: nothing changed, and
// the event is what notifies subscribers (tenant.disabled), which must not
// hear of it twice. Its cached DEKs are evicted: nothing of it is used
// until it is enabled.
func (s *Service) DisableTenant(ctx context.Context, c Caller, id string, opts ...WriteOption) (storage.Tenant, error) {
	t, err := s.setTenantStatus(ctx, c, id, storage.TenantDisabled, audit.ActionTenantDisable, opts)
	if err == nil {
		s.keys.Evict(id)
	}
	return t, err
}

// EnableTenant enables a disabled tenant again (tenant.enable event);
// enabling an active tenant answers it unchanged and records nothing.
func (s *Service) EnableTenant(ctx context.Context, c Caller, id string, opts ...WriteOption) (storage.Tenant, error) {
	return s.setTenantStatus(ctx, c, id, storage.TenantActive, audit.ActionTenantEnable, opts)
}

func (s *Service) setTenantStatus(ctx context.Context, c Caller, id, status, action string, opts []WriteOption) (storage.Tenant, error) {
	t, err := s.GetTenant(ctx, id)
	if err != nil {
		return t, err
	}
	if t.Status == status {
		return t, nil
	}
	t.Status = status
	ev := c.success(action, id, "", "status="+status, opts)
	t, err = s.tenantWrite(ctx, ev, func(build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error) {
		return s.store.UpdateTenant(ctx, t, build)
	})
	switch {
	case errors.Is(err, storage.ErrConflict):
		return storage.Tenant{}, ErrConflict
	case errors.Is(err, storage.ErrTenantNotFound):
		return storage.Tenant{}, ErrTenantNotFound
	case err != nil:
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return t, nil
}

// TenantActive reports whether background work may touch tenant id: it
// exists and is not disabled. A missing (or offboarded) tenant is false
// with no error; an error means the store could not say.
func (s *Service) TenantActive(ctx context.Context, id string) (bool, error) {
	t, err := s.tenantRecord(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return t.Status != storage.TenantDisabled, nil
}

// OffboardResult is what offboarding did.
type OffboardResult struct {
	Integrations       int // the tenant's integrations, all deleted
	RevokedAtProvider  int // integrations whose every token the provider confirmed revoked
	RevocationsPending int // tokens whose revocation failed and is queued for retry
	// Shredded: the tenant's HSM key is destroyed. False when the HSM
	// failed after the records were deleted: FinishShreds destroys it
	// later (at start-up and in the revocation loop).
	Shredded bool
}

// offboardWorkers bounds the integrations revoked at once while
// offboarding (each is at most two provider calls).
const offboardWorkers = 4

// OffboardTenant offboards tenant id:
//
//  1. it is disabled first (a tenant.disable event, unless it already
//     was), so nothing uses or refreshes its tokens any more;
//  2. each integration's tokens are revoked at its provider with the
//     integration's own endpoint and client (refresh token first), each
//     attempt audited as token.revoke; a failed one is queued for retry
//     (QueueRevocation), sealed under the KEK so it outlives the shred;
//  3. the tenant, its integrations and connect sessions are deleted in one
//     transaction with the tenant.offboard event (detail "integrations=N
//     revoked_at_provider=M revocations_pending=K"), and its id is kept
//     as offboarded: it answers not found from then on and can never be
//     created again;
//  4. its HSM tenant key is destroyed (crypto-shred): every DEK wrapped
//     under it, in this database or any copy of it, is unreadable.
//
// A token that cannot be opened (the HSM fails) stops it before anything
// is deleted (ErrUnavailable; the tenant stays disabled, and offboarding
// again resumes). Once a provider call has started it runs to the end
// whatever the caller does. When only step 4 fails, the answer is still a
// success with Shredded false; FinishShreds completes it.
func (s *Service) OffboardTenant(ctx context.Context, c Caller, id string, opts ...WriteOption) (OffboardResult, error) {
	var res OffboardResult
	t, err := s.GetTenant(ctx, id)
	if err != nil {
		return res, err
	}
	if t.Status != storage.TenantDisabled {
		if t, err = s.DisableTenant(ctx, c, id, opts...); err != nil {
			return res, err
		}
	}
	if s.keys.CryptoShredding() {
		// A tenant the start-up migration has not reached yet (or could
		// not) gets its tenant key now: destroying a key that wraps
		// nothing would shred nothing. Refused (nothing deleted) if that
		// fails.
		if t, _, err = s.UpgradeTenantKeys(ctx, c, id, opts...); err != nil {
			return res, err
		}
	}
	wrapped := true
	for _, w := range t.DEKs {
		wrapped = wrapped && w.TenantWrapped
	}
	ctx = context.WithoutCancel(ctx)
	ins, err := s.store.ListIntegrations(ctx, id)
	if err != nil {
		return res, s.storeErr(err)
	}
	res.Integrations = len(ins)
	type result struct {
		confirmed bool
		queued    int
		err       error
	}
	results := make([]result, len(ins))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(offboardWorkers, len(ins)) {
		wg.Go(func() {
			for i := range next {
				r := &results[i]
				r.confirmed, r.queued, r.err = s.offboardIntegration(ctx, c, t, ins[i].ID)
			}
		})
	}
	for i := range ins {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, r := range results {
		if r.err != nil {
			return OffboardResult{}, r.err
		}
		if r.confirmed {
			res.RevokedAtProvider++
		}
		res.RevocationsPending += r.queued
	}
	cctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	ev := c.success(audit.ActionTenantOffboard, id, "", fmt.Sprintf("integrations=%d revoked_at_provider=%d revocations_pending=%d",
		res.Integrations, res.RevokedAtProvider, res.RevocationsPending), opts)
	s.tenants.forget(id)
	defer s.tenants.forget(id)
	if _, err := s.audit.RecordWith(cctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		return s.store.OffboardTenant(cctx, id, build)
	}); err != nil {
		if errors.Is(err, storage.ErrTenantNotFound) {
			// Offboarded by a concurrent call.
			return OffboardResult{}, ErrTenantNotFound
		}
		return OffboardResult{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	for _, in := range ins {
		s.usage.forget(id, in.ID)
	}
	if err := s.keys.Shred(cctx, id); err != nil {
		s.life.shredPending.Store(true)
		s.log.ErrorContext(ctx, "offboarded tenant's key not destroyed yet; retried later", "tenant_id", id, "err", err)
	} else {
		// Shredded only if every DEK was under the tenant key: otherwise
		// a copy of the records still opens with the KEK alone.
		res.Shredded = wrapped
	}
	return res, nil
}

// offboardIntegration revokes one integration's tokens under its lock
// (a refresh in flight commits first, so the newest tokens are revoked).
func (s *Service) offboardIntegration(ctx context.Context, c Caller, t storage.Tenant, id string) (confirmed bool, queued int, err error) {
	unlock, err := s.lock(ctx, t.ID, id)
	if err != nil {
		return false, 0, err
	}
	defer unlock()
	in, err := s.store.GetIntegration(ctx, t.ID, id)
	if errors.Is(err, storage.ErrNotFound) {
		return false, 0, nil // disconnected meanwhile
	}
	if err != nil {
		return false, 0, s.storeErr(err)
	}
	p, ok := s.Provider(in.Provider)
	if !ok {
		s.log.WarnContext(ctx, "offboarding: provider not configured, tokens not revoked", "tenant_id", t.ID, "integration_id", id)
		return false, 0, nil
	}
	if p, err = s.forIntegration(ctx, t, in, p); err == nil {
		confirmed, queued, err = s.revokeTokens(ctx, c, t, in, p)
	}
	if errors.Is(err, envelope.ErrShredded) {
		// Records restored from a backup after this tenant's key was
		// destroyed: nothing in them can be opened, so nothing can be
		// revoked (nor used); they are deleted like the rest.
		s.log.WarnContext(ctx, "offboarding: tokens already shredded, nothing to revoke", "tenant_id", t.ID, "integration_id", id)
		return false, 0, nil
	}
	return confirmed, queued, err
}

// revokeTokens revokes in's tokens at p's revocation endpoint (RFC 7009:
// the refresh token first, since revoking it usually kills the access
// token too). Each attempt is audited as token.revoke; a failed one is
// queued (QueueRevocation) with its failure event, detail "<hint>:
// <reason>; retry queued". confirmed: the provider confirmed every token;
// queued: how many were queued. A provider without a revocation endpoint
// confirms nothing and queues nothing. err: a token could not be opened or
// an event not recorded.
func (s *Service) revokeTokens(ctx context.Context, c Caller, t storage.Tenant, in storage.Integration, p *Provider) (confirmed bool, queued int, err error) {
	if p.Endpoint.RevocationURL == "" {
		return false, 0, nil
	}
	confirmed = true
	for _, f := range []struct {
		field, hint string
		ct          []byte
	}{{fieldRefresh, "refresh_token", in.RefreshToken}, {fieldAccess, "access_token", in.AccessToken}} {
		if len(f.ct) == 0 {
			continue
		}
		b, err := s.keys.OpenField(ctx, t, in.ID, f.field, f.ct)
		if err != nil {
			return false, queued, fmt.Errorf("%w: open %s: %w", ErrUnavailable, f.field, err)
		}
		tok := secret.NewString(string(b.Reveal()))
		b.Wipe()
		rerr := s.revoke(ctx, p.Endpoint, tok, f.hint)
		ev := c.event(audit.ActionTokenRevoke, t.ID, in.ID, audit.OutcomeSuccess, f.hint)
		ev.TargetHost = hostOf(p.Endpoint.RevocationURL)
		if rerr == nil {
			if _, aerr := s.audit.Record(ctx, ev); aerr != nil {
				return false, queued, fmt.Errorf("%w: audit: %w", ErrUnavailable, aerr)
			}
			continue
		}
		confirmed = false
		reason := revokeReason(rerr)
		s.log.WarnContext(ctx, "revocation failed", "tenant_id", t.ID, "integration_id", in.ID, "hint", f.hint, "err", reason)
		ev.Outcome, ev.Detail = audit.OutcomeFailure, f.hint+": "+reason+"; retry queued"
		qerr := s.QueueRevocation(ctx, t.ID, in.ID, p.Name, f.hint, tok, p.Endpoint, reason, &ev)
		if qerr == nil {
			queued++
			continue
		}
		if !errors.Is(qerr, ErrRevocationQueue) {
			s.log.ErrorContext(ctx, "failed revocation not queued", "tenant_id", t.ID, "integration_id", in.ID, "hint", f.hint, "err", qerr)
		}
		ev.Detail = f.hint + ": " + reason
		if _, aerr := s.audit.Record(ctx, ev); aerr != nil {
			return false, queued, fmt.Errorf("%w: audit: %w", ErrUnavailable, aerr)
		}
	}
	return confirmed, queued, nil
}

// ShredPending reports whether a tenant key this process should have
// destroyed is still there (the HSM failed): the revocation loop then runs
// FinishShreds.
func (s *Service) ShredPending() bool { return s.life.shredPending.Load() }

// FinishShreds destroys the HSM keys of offboarded tenants that still have
// one (an HSM outage during offboarding left it). Run at start-up and by
// the revocation loop while ShredPending; it returns how many it destroyed.
// Without a tenant keyring there is nothing to destroy. Each offboarded id
// costs an HSM lookup, which is why the loop does not run it every round.
func (s *Service) FinishShreds(ctx context.Context) (int, error) {
	tk, ok := s.life.keyring.(hsm.TenantKeyring)
	if !ok {
		s.life.shredPending.Store(false)
		return 0, nil
	}
	// Cleared first: a shred failing meanwhile sets it again.
	s.life.shredPending.Store(false)
	failed := true
	defer func() {
		if failed {
			s.life.shredPending.Store(true)
		}
	}()
	ids, err := s.store.ListOffboarded(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	n := 0
	for _, id := range ids {
		has, err := tk.HasTenantKey(ctx, id)
		if err != nil {
			return n, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		if !has {
			continue
		}
		if err := s.keys.Shred(ctx, id); err != nil {
			return n, fmt.Errorf("%w: shred: %w", ErrUnavailable, err)
		}
		s.log.InfoContext(ctx, "offboarded tenant's key destroyed", "tenant_id", id)
		n++
	}
	failed = false
	return n, nil
}

// UpgradeTenantKeys gives tenant id's DEKs that still lack it the tenant
// layer (envelope.UpgradeDEK: the DEK wrapped under the tenant's HSM key,
// that under the current KEK), so that offboarding can crypto-shred them.
// The change commits with a key.rotate event, detail "tenant key deks=N
// kek_version=K"; a tenant with nothing to upgrade records nothing. It
// returns the tenant and how many DEKs changed.
func (s *Service) UpgradeTenantKeys(ctx context.Context, c Caller, id string, opts ...WriteOption) (storage.Tenant, int, error) {
	t, err := s.GetTenant(ctx, id)
	if err != nil {
		return t, 0, err
	}
	n, err := s.upgradeDEKs(ctx, &t)
	if err != nil || n == 0 {
		return t, 0, err
	}
	ev := c.success(audit.ActionKeyRotate, id, "", fmt.Sprintf("tenant key deks=%d kek_version=%d", n, t.KEKVersion), opts)
	t, err = s.tenantWrite(ctx, ev, func(build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error) {
		return s.store.UpdateTenant(ctx, t, build)
	})
	if errors.Is(err, storage.ErrConflict) {
		return storage.Tenant{}, 0, ErrConflict
	}
	if err != nil {
		return storage.Tenant{}, 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.keys.Evict(id)
	return t, n, nil
}

// upgradeDEKs upgrades t's DEKs without the tenant layer in place and
// says how many changed (none when the keyring has no tenant keys).
func (s *Service) upgradeDEKs(ctx context.Context, t *storage.Tenant) (int, error) {
	current := s.kekVersion()
	n := 0
	for i, w := range t.DEKs {
		if w.TenantWrapped {
			continue
		}
		nw, changed, err := s.keys.UpgradeDEK(ctx, t.ID, w, current)
		if err != nil {
			return 0, fmt.Errorf("%w: tenant key: %w", ErrUnavailable, err)
		}
		if changed {
			t.DEKs[i] = nw
			n++
		}
	}
	if w, ok := t.CurrentDEK(); ok {
		t.KEKVersion = w.KEKVersion
	}
	return n, nil
}

// MigrateTenantKeys runs UpgradeTenantKeys (actor "vaultd") for every
// tenant with a DEK lacking the tenant layer, one tenant at a time: the
// start-up migration of tenants created before tenant keys existed. It
// carries on past a tenant that fails (logged) and returns how many
// tenants it upgraded and the first error.
func (s *Service) MigrateTenantKeys(ctx context.Context) (int, error) {
	ts, err := s.store.ListTenants(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	c := Caller{Principal: SystemPrincipal}
	n := 0
	var first error
	for _, t := range ts {
		if !slices.ContainsFunc(t.DEKs, func(w storage.WrappedDEK) bool { return !w.TenantWrapped }) {
			continue
		}
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		_, k, err := s.UpgradeTenantKeys(ctx, c, t.ID)
		if err != nil {
			s.log.WarnContext(ctx, "tenant key migration failed; retried at the next start or by rewrap", "tenant_id", t.ID, "err", err)
			if first == nil {
				first = err
			}
			continue
		}
		if k > 0 {
			s.log.InfoContext(ctx, "tenant keys migrated", "tenant_id", t.ID, "deks", k)
			n++
		}
	}
	return n, first
}

// tenantRecord reads a tenant whatever its status (ErrNotFound when
// missing, like s.tenant): offboarding, the revocation queue and the
// background work's checks use it.
func (s *Service) tenantRecord(ctx context.Context, id string) (storage.Tenant, error) {
	if !storage.ValidID(id) {
		return storage.Tenant{}, ErrNotFound
	}
	t, gen, ok := s.tenants.get(id, time.Now())
	if ok {
		return t, nil
	}
	read := time.Now()
	t, err := s.store.GetTenant(ctx, id)
	if errors.Is(err, storage.ErrTenantNotFound) || errors.Is(err, storage.ErrNotFound) {
		return storage.Tenant{}, ErrNotFound
	}
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.tenants.put(t, read, gen)
	return t, nil
}
