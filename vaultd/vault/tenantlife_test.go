package vault

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/hsm/hsmtest"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/envelope"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// lifeFixture is a fixture whose service has the lifecycle's parts: a
// keyring with tenant keys (the DEK cache's own) and a revoker that fails
// on demand in front of the fake provider's.
type lifeFixture struct {
	*fixture
	kr     *hsmtest.Fake
	keys   *envelope.Keys
	revoke *flakyRevoker
}

// flakyRevoker fails while failing is set (or for the next failNext
// calls), else passes the call to the fake provider.
type flakyRevoker struct {
	mu        sync.Mutex
	failing   bool
	failNext  int
	err       error
	inner     Revoker
	attempted []string
}

func (r *flakyRevoker) revoke(ctx context.Context, ep oauth.Endpoint, tok secret.String, hint string) error {
	r.mu.Lock()
	r.attempted = append(r.attempted, hint+"="+tok.Reveal())
	fail := r.failing || r.failNext > 0
	if r.failNext > 0 {
		r.failNext--
	}
	err := r.err
	r.mu.Unlock()
	if fail {
		return err
	}
	return r.inner(ctx, ep, tok, hint)
}

func (r *flakyRevoker) set(failing bool) {
	r.mu.Lock()
	r.failing = failing
	r.mu.Unlock()
}

func newLifeFixture(t *testing.T, opts ...func(*Options)) *lifeFixture {
	t.Helper()
	lf := &lifeFixture{kr: hsmtest.NewFake(), revoke: &flakyRevoker{err: &oauth.Error{Op: "revoke", HTTPStatus: 503}}}
	var err error
	if lf.keys, err = envelope.NewKeys(lf.kr, envelope.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lf.keys.Close() })
	lf.fixture = newFixture(t, append([]func(*Options){func(o *Options) {
		lf.revoke.inner = o.Revoke
		o.Keys, o.Keyring, o.Revoke = lf.keys, lf.kr, lf.revoke.revoke
	}}, opts...)...)
	return lf
}

// appCalls runs every app call on tenant's integration id and returns
// each one's error by name.
func appCalls(ctx context.Context, svc *Service, tenant, id string) map[string]error {
	out := map[string]error{}
	_, out["get"] = svc.GetIntegration(ctx, tenant, id)
	_, out["list"] = svc.ListIntegrations(ctx, tenant)
	_, out["token"] = svc.AccessToken(ctx, Caller{Principal: "app"}, tenant, id)
	if ref, err := svc.Lookup(ctx, tenant, id); err != nil {
		out["lookup"] = err
	} else {
		_, out["lookup"] = svc.AccessTokenFrom(ctx, Caller{Principal: "app"}, ref)
	}
	_, out["store"] = svc.StoreToken(ctx, Caller{Principal: "app"}, tenant, id+"-2", "example", oauth.Token{AccessToken: secret.NewString("at-x")})
	_, out["session"] = svc.GetConnectSession(ctx, tenant, "cs-1")
	return out
}

func TestDisableBlocksEveryAppCallEnableRestores(t *testing.T) {
	t.Parallel()
	f := newLifeFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	f.store0(t, "globex", "crm", 3600)
	op := Caller{Principal: "op"}

	tn, err := f.svc.DisableTenant(ctx, op, "acme")
	if err != nil || tn.Status != storage.TenantDisabled {
		t.Fatalf("disable: %+v %v", tn, err)
	}
	if active, err := f.svc.TenantActive(ctx, "acme"); active || err != nil {
		t.Fatalf("TenantActive(disabled) = %v %v", active, err)
	}
	for name, err := range appCalls(ctx, f.svc, "acme", "crm") {
		if !errors.Is(err, ErrTenantDisabled) {
			t.Errorf("%s on a disabled tenant: %v, want ErrTenantDisabled", name, err)
		}
	}
	if _, err := f.svc.Disconnect(ctx, Caller{Principal: "app"}, "acme", "crm"); !errors.Is(err, ErrTenantDisabled) {
		t.Errorf("disconnect on a disabled tenant: %v", err)
	}
	// Nothing of it is refreshed either: the refresh path loads the tenant.
	f.clk.Add(2 * time.Hour)
	if _, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm"); !errors.Is(err, ErrTenantDisabled) || f.fp.calls.Load() != 0 {
		t.Fatalf("due token of a disabled tenant: %v, %d refreshes", err, f.fp.calls.Load())
	}
	// Another tenant is untouched.
	if l, err := f.svc.AccessToken(ctx, Caller{}, "globex", "crm"); err != nil || l.Token.Reveal() != "at-1" {
		t.Fatalf("other tenant: %q %v", l.Token.Reveal(), err)
	}
	// Idempotent, and the no-op records nothing.
	if tn, err := f.svc.DisableTenant(ctx, op, "acme"); err != nil || tn.Status != storage.TenantDisabled {
		t.Fatalf("disable again: %+v %v", tn, err)
	}
	if n := len(f.events(t, audit.ActionTenantDisable)); n != 1 {
		t.Fatalf("tenant.disable events: %d, want 1", n)
	}
	if _, err := f.svc.DisableTenant(ctx, op, "nosuch"); !errors.Is(err, ErrTenantNotFound) {
		t.Fatalf("disable unknown: %v", err)
	}

	if tn, err := f.svc.EnableTenant(ctx, op, "acme"); err != nil || tn.Status != storage.TenantActive {
		t.Fatalf("enable: %+v %v", tn, err)
	}
	if l, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm"); err != nil || l.Token.Reveal() != "at-2" {
		t.Fatalf("after enable: %q %v", l.Token.Reveal(), err)
	}
	errs := appCalls(ctx, f.svc, "acme", "crm")
	for _, name := range []string{"get", "list", "token", "lookup", "store"} {
		if errs[name] != nil {
			t.Errorf("%s after enable: %v", name, errs[name])
		}
	}
	if !errors.Is(errs["session"], ErrNotFound) {
		t.Errorf("missing session after enable: %v", errs["session"])
	}
	if active, err := f.svc.TenantActive(ctx, "acme"); !active || err != nil {
		t.Fatalf("TenantActive(enabled) = %v %v", active, err)
	}
	if active, err := f.svc.TenantActive(ctx, "nosuch"); active || err != nil {
		t.Fatalf("TenantActive(unknown) = %v %v", active, err)
	}
	evs := f.events(t, audit.ActionTenantEnable)
	if len(evs) != 1 || evs[0].Actor != "op" || evs[0].TenantID != "acme" || evs[0].Outcome != audit.OutcomeSuccess {
		t.Fatalf("tenant.enable events: %+v", evs)
	}
}

func TestOffboardRevokesDeletesShredsTombstones(t *testing.T) {
	t.Parallel()
	f := newLifeFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	f.store0(t, "acme", "erp", 3600)
	f.store0(t, "globex", "crm", 3600)
	// A copy of the tenant record as a backup holds it.
	before, err := f.store.GetTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	in, err := f.store.GetIntegration(ctx, "acme", "crm")
	if err != nil {
		t.Fatal(err)
	}
	if has, err := f.kr.HasTenantKey(ctx, "acme"); !has || err != nil {
		t.Fatalf("tenant key before: %v %v", has, err)
	}

	res, err := f.svc.OffboardTenant(ctx, Caller{Principal: "op"}, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if res != (OffboardResult{Integrations: 2, RevokedAtProvider: 2, RevocationsPending: 0, Shredded: true}) {
		t.Fatalf("result: %+v", res)
	}
	slices.Sort(f.fp.revoked)
	if want := []string{"access_token=at-0", "access_token=at-0", "refresh_token=rt-0", "refresh_token=rt-0"}; !slices.Equal(f.fp.revoked, want) {
		t.Fatalf("revoked: %v", f.fp.revoked)
	}
	if _, err := f.svc.GetTenant(ctx, "acme"); !errors.Is(err, ErrTenantNotFound) {
		t.Fatalf("offboarded tenant: %v", err)
	}
	if _, err := f.svc.GetIntegration(ctx, "acme", "crm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("offboarded tenant's integration: %v", err)
	}
	if _, err := f.svc.OffboardTenant(ctx, Caller{Principal: "op"}, "acme"); !errors.Is(err, ErrTenantNotFound) {
		t.Fatalf("offboard twice: %v", err)
	}
	// The id is never reused, and the attempt leaves no key behind.
	if _, err := f.svc.CreateTenant(ctx, Caller{Principal: "op"}, "acme"); !errors.Is(err, ErrTenantExists) {
		t.Fatalf("re-create: %v", err)
	}
	if has, err := f.kr.HasTenantKey(ctx, "acme"); has || err != nil {
		t.Fatalf("tenant key after: %v %v", has, err)
	}
	// Crypto-shred: the copy's DEK, same HSM, opens nothing.
	f.keys.Evict("acme")
	if _, err := f.keys.OpenField(ctx, before, "crm", fieldAccess, in.AccessToken); err == nil {
		t.Fatal("a pre-offboarding copy still opens the tenant's token")
	}
	// Others are untouched.
	if l, err := f.svc.AccessToken(ctx, Caller{}, "globex", "crm"); err != nil || l.Token.Reveal() != "at-0" {
		t.Fatalf("other tenant: %q %v", l.Token.Reveal(), err)
	}
	if n := len(f.events(t, audit.ActionTenantDisable)); n != 1 {
		t.Fatalf("tenant.disable events: %d, want 1 (offboarding disables first)", n)
	}
	evs := f.events(t, audit.ActionTenantOffboard)
	if len(evs) != 1 || evs[0].Detail != "integrations=2 revoked_at_provider=2 revocations_pending=0" || evs[0].TenantID != "acme" {
		t.Fatalf("tenant.offboard events: %+v", evs)
	}
	if n := len(f.events(t, audit.ActionTokenRevoke)); n != 4 {
		t.Fatalf("token.revoke events: %d, want 4", n)
	}
}

// A shred the HSM refused is finished later (FinishShreds), and the
// offboarding answered all the same.
func TestOffboardShredDeferred(t *testing.T) {
	t.Parallel()
	f := newLifeFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	// The offboarding's own HSM work (opening two tokens) succeeds; the
	// destroy call is the one that fails.
	var once sync.Once
	f.revoke.inner = func(context.Context, oauth.Endpoint, secret.String, string) error {
		once.Do(func() { f.kr.FailNext(hsm.ErrUnavailable) })
		return nil
	}
	res, err := f.svc.OffboardTenant(ctx, Caller{Principal: "op"}, "acme")
	if err != nil || res.Shredded || res.Integrations != 1 {
		t.Fatalf("offboard with the destroy failing: %+v %v", res, err)
	}
	if !f.svc.ShredPending() {
		t.Fatal("ShredPending after a failed shred")
	}
	if has, _ := f.kr.HasTenantKey(ctx, "acme"); !has {
		t.Fatal("the key is gone although the destroy failed")
	}
	if n, err := f.svc.FinishShreds(ctx); n != 1 || err != nil {
		t.Fatalf("FinishShreds: %d %v", n, err)
	}
	if has, _ := f.kr.HasTenantKey(ctx, "acme"); has || f.svc.ShredPending() {
		t.Fatal("key still there after FinishShreds")
	}
	if n, err := f.svc.FinishShreds(ctx); n != 0 || err != nil {
		t.Fatalf("FinishShreds again: %d %v", n, err)
	}
}

// An offboarding whose tokens cannot be opened (HSM down) deletes nothing.
func TestOffboardHSMDownKeepsRecords(t *testing.T) {
	t.Parallel()
	f := newLifeFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	f.keys.Evict("acme")
	f.kr.Fail.Store(true)
	_, err := f.svc.OffboardTenant(ctx, Caller{Principal: "op"}, "acme")
	f.kr.Fail.Store(false)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("offboard with the HSM down: %v", err)
	}
	tn, err := f.svc.GetTenant(ctx, "acme")
	if err != nil || tn.Status != storage.TenantDisabled {
		t.Fatalf("tenant after a failed offboarding: %+v %v", tn, err)
	}
	if _, err := f.store.GetIntegration(ctx, "acme", "crm"); err != nil {
		t.Fatalf("integration after a failed offboarding: %v", err)
	}
	// Offboarding again resumes.
	res, err := f.svc.OffboardTenant(ctx, Caller{Principal: "op"}, "acme")
	if err != nil || res.RevokedAtProvider != 1 {
		t.Fatalf("offboard again: %+v %v", res, err)
	}
}

// legacyKeyring hides the fake's tenant keys: DEKs made through it have
// no tenant layer, as every DEK did before tenant keys existed.
type legacyKeyring struct{ hsm.Keyring }

func TestMigrateTenantKeys(t *testing.T) {
	t.Parallel()
	f := newLifeFixture(t)
	ctx := t.Context()
	legacy, err := envelope.NewKeys(legacyKeyring{f.kr}, envelope.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer legacy.Close()
	dek, err := legacy.NewDEK(ctx, "oldco", 1)
	if err != nil || dek.TenantWrapped {
		t.Fatalf("legacy DEK: %+v %v", dek, err)
	}
	_, _, err = f.store.CreateTenant(ctx, storage.Tenant{ID: "oldco", Status: storage.TenantActive, KEKVersion: dek.KEKVersion, DEKVersion: 1,
		DEKs: []storage.WrappedDEK{dek}, CreatedAt: f.clk.Now()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.store0(t, "oldco", "crm", 3600)

	n, err := f.svc.MigrateTenantKeys(ctx)
	if err != nil || n != 1 {
		t.Fatalf("MigrateTenantKeys: %d %v", n, err)
	}
	tn, _ := f.store.GetTenant(ctx, "oldco")
	if len(tn.DEKs) != 1 || !tn.DEKs[0].TenantWrapped {
		t.Fatalf("migrated DEKs: %+v", tn.DEKs)
	}
	if l, err := f.svc.AccessToken(ctx, Caller{}, "oldco", "crm"); err != nil || l.Token.Reveal() != "at-0" {
		t.Fatalf("token after migration: %q %v", l.Token.Reveal(), err)
	}
	evs := f.events(t, audit.ActionKeyRotate)
	if len(evs) != 1 || evs[0].Actor != SystemPrincipal || !strings.HasPrefix(evs[0].Detail, "tenant key deks=1") {
		t.Fatalf("key.rotate events: %+v", evs)
	}
	// Nothing left to do: no event, nothing changed.
	if n, err := f.svc.MigrateTenantKeys(ctx); err != nil || n != 0 {
		t.Fatalf("MigrateTenantKeys again: %d %v", n, err)
	}
	if got := len(f.events(t, audit.ActionKeyRotate)); got != 1 {
		t.Fatalf("key.rotate events after a no-op: %d", got)
	}
	// Shredding now reaches it.
	copyOf, _ := f.store.GetTenant(ctx, "oldco")
	in, _ := f.store.GetIntegration(ctx, "oldco", "crm")
	if _, err := f.svc.OffboardTenant(ctx, Caller{Principal: "op"}, "oldco"); err != nil {
		t.Fatal(err)
	}
	f.keys.Evict("oldco")
	if _, err := f.keys.OpenField(ctx, copyOf, "crm", fieldAccess, in.AccessToken); err == nil {
		t.Fatal("a migrated tenant's copy opens after offboarding")
	}
}

// The rewrap route upgrades legacy DEKs too.
func TestRewrapUpgradesLegacyDEKs(t *testing.T) {
	t.Parallel()
	f := newLifeFixture(t)
	ctx := t.Context()
	legacy, err := envelope.NewKeys(legacyKeyring{f.kr}, envelope.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer legacy.Close()
	dek, _ := legacy.NewDEK(ctx, "oldco", 1)
	if _, _, err := f.store.CreateTenant(ctx, storage.Tenant{ID: "oldco", Status: storage.TenantActive, KEKVersion: dek.KEKVersion, DEKVersion: 1,
		DEKs: []storage.WrappedDEK{dek}, CreatedAt: f.clk.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	tn, n, err := f.svc.RewrapTenant(ctx, Caller{Principal: "op"}, "oldco")
	if err != nil || n != 1 || !tn.DEKs[0].TenantWrapped {
		t.Fatalf("rewrap: %d %+v %v", n, tn.DEKs, err)
	}
	evs := f.events(t, audit.ActionKeyRotate)
	if len(evs) != 1 || !strings.HasSuffix(evs[0].Detail, "tenant key deks=1") {
		t.Fatalf("key.rotate events: %+v", evs)
	}
}

// TestOffboardUpgradesAnUnmigratedTenant: a tenant the start-up migration
// has not reached is given its tenant key by the offboarding itself,
// before anything is deleted, so the shred reaches the copies made since.
func TestOffboardUpgradesAnUnmigratedTenant(t *testing.T) {
	t.Parallel()
	f := newLifeFixture(t)
	ctx := t.Context()
	legacy, err := envelope.NewKeys(legacyKeyring{f.kr}, envelope.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer legacy.Close()
	dek, err := legacy.NewDEK(ctx, "oldco", 1)
	if err != nil || dek.TenantWrapped {
		t.Fatalf("legacy DEK: %+v %v", dek, err)
	}
	if _, _, err := f.store.CreateTenant(ctx, storage.Tenant{ID: "oldco", Status: storage.TenantActive, KEKVersion: dek.KEKVersion, DEKVersion: 1,
		DEKs: []storage.WrappedDEK{dek}, CreatedAt: f.clk.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	f.store0(t, "oldco", "crm", 3600)
	res, err := f.svc.OffboardTenant(ctx, Caller{Principal: "op"}, "oldco")
	if err != nil || !res.Shredded {
		t.Fatalf("offboard: %+v %v", res, err)
	}
	evs := f.events(t, audit.ActionKeyRotate)
	if len(evs) != 1 || !strings.HasPrefix(evs[0].Detail, "tenant key deks=1") {
		t.Fatalf("the offboarding did not upgrade the DEK first: %+v", evs)
	}
}
