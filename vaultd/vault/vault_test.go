package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vaultd/vaultd/hsm/hsmtest"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/envelope"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeProvider is a scripted token endpoint: it counts calls and answers
// with the next scripted outcome (default: a fresh token pair).
type fakeProvider struct {
	calls   atomic.Int64
	mu      sync.Mutex
	err     error
	scopes  []string
	noRT    bool
	gate    chan struct{} // when set, Refresh waits on it (widens races)
	entered chan struct{} // when set, Refresh sends on it once called
	after   func()        // when set, runs once the provider has answered
	// revokeGate, when set, makes revoke wait on it (or give up with
	// ctx, as an HTTP call would); revokeEntered gets a send per call.
	revokeGate    chan struct{}
	revokeEntered chan struct{}
	lastRT        string
	revoked       []string
}

func (f *fakeProvider) refresh(ctx context.Context, ep oauth.Endpoint, rt secret.String) (oauth.Token, error) {
	n := f.calls.Add(1)
	f.mu.Lock()
	gate, err, scopes, noRT, after, entered := f.gate, f.err, f.scopes, f.noRT, f.after, f.entered
	f.lastRT = rt.Reveal()
	f.mu.Unlock()
	if entered != nil {
		select { // never block a refresh on a test that stopped listening
		case entered <- struct{}{}:
		default:
		}
	}
	if after != nil {
		defer after()
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return oauth.Token{}, ctx.Err()
		}
	}
	if err != nil {
		return oauth.Token{}, err
	}
	tok := oauth.Token{AccessToken: secret.NewString(fmt.Sprintf("at-%d", n)), TokenType: "Bearer", ExpiresIn: 3600, Scope: scopes}
	if !noRT {
		tok.RefreshToken = secret.NewString(fmt.Sprintf("rt-%d", n))
	}
	return tok, nil
}

func (f *fakeProvider) revoke(ctx context.Context, ep oauth.Endpoint, tok secret.String, hint string) error {
	f.mu.Lock()
	gate, entered := f.revokeGate, f.revokeEntered
	f.mu.Unlock()
	if entered != nil {
		select { // never block a refresh on a test that stopped listening
		case entered <- struct{}{}:
		default:
		}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, hint+"="+tok.Reveal())
	return nil
}

type fixture struct {
	svc   *Service
	store storage.Store
	kr    *hsmtest.Fake
	fp    *fakeProvider
	clk   *clock
	audit *audit.Log
}

func newFixture(t *testing.T, opts ...func(*Options)) *fixture {
	t.Helper()
	ctx := t.Context()
	st, err := bolt.Open(ctx, filepath.Join(t.TempDir(), "v.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kr := hsmtest.NewFake()
	keys, err := envelope.NewKeys(kr, envelope.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	al, err := audit.New(ctx, st, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	fp := &fakeProvider{}
	base, _ := url.Parse("https://api.example.test/v2")
	o := Options{
		Store: st, Keys: keys, Audit: al, Now: clk.Now, Refresh: fp.refresh, Revoke: fp.revoke,
		Providers: Providers{"example": {
			Name: "example", APIBase: base, Scopes: []string{"a", "b"}, RefreshMargin: time.Minute,
			DefaultLifetime: time.Hour,
			Endpoint:        oauth.Endpoint{TokenURL: "https://oauth.example.test/token", RevocationURL: "https://oauth.example.test/revoke"},
		}},
		UsageFlushInterval: time.Hour,
	}
	for _, fn := range opts {
		fn(&o)
	}
	svc, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	if _, err := svc.CreateTenant(ctx, Caller{Principal: "op"}, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateTenant(ctx, Caller{Principal: "op"}, "globex"); err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, store: st, kr: kr, fp: fp, clk: clk, audit: al}
}

func (f *fixture) store0(t *testing.T, tenant, id string, expiresIn int64) {
	t.Helper()
	_, err := f.svc.StoreToken(t.Context(), Caller{Principal: "app"}, tenant, id, "example", oauth.Token{
		AccessToken: secret.NewString("at-0"), RefreshToken: secret.NewString("rt-0"),
		TokenType: "Bearer", ExpiresIn: expiresIn, Scope: []string{"a"},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func auditActions(t *testing.T, f *fixture) map[string]int {
	t.Helper()
	out := map[string]int{}
	err := f.audit.Query(t.Context(), audit.Filter{Limit: 10000}, func(line []byte) error {
		ev, err := audit.ParseEvent(line)
		if err != nil {
			return err
		}
		out[ev.Action+"/"+ev.Outcome]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFreshTokenNoRefreshNoHSM(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	// Warm the DEK cache, then count keyring calls on the hot path.
	if _, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm"); err != nil {
		t.Fatal(err)
	}
	before := f.kr.Calls()
	for i := 0; i < 50; i++ {
		l, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm")
		if err != nil {
			t.Fatal(err)
		}
		if l.Token.Reveal() != "at-0" {
			t.Fatalf("token %q", l.Token.Reveal())
		}
	}
	if f.fp.calls.Load() != 0 {
		t.Fatal("fresh token was refreshed")
	}
	if got := f.kr.Calls() - before; got != 0 {
		t.Fatalf("hot path made %d HSM calls", got)
	}
}

func TestConcurrentExpiredOneRefresh(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 30) // inside the 60s margin: needs refresh
	f.fp.mu.Lock()
	f.fp.gate = make(chan struct{})
	f.fp.mu.Unlock()
	const n = 200
	var wg sync.WaitGroup
	tokens := make([]string, n)
	errs := make([]error, n)
	started := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			started <- struct{}{}
			l, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm")
			errs[i] = err
			if err == nil {
				tokens[i] = l.Token.Reveal()
			}
		}(i)
	}
	for i := 0; i < n; i++ {
		<-started
	}
	close(f.fp.gate) // let the single refresh finish
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if tokens[i] != "at-1" {
			t.Fatalf("caller %d got %q", i, tokens[i])
		}
	}
	if c := f.fp.calls.Load(); c != 1 {
		t.Fatalf("token endpoint called %d times, want 1", c)
	}
	md, err := f.svc.GetIntegration(ctx, "acme", "crm")
	if err != nil {
		t.Fatal(err)
	}
	if md.RefreshCount != 1 || md.Status != storage.StatusActive || md.LastRefreshAt == nil {
		t.Fatalf("metadata %+v", md)
	}
	// The rotated refresh token was committed: the next refresh uses it.
	f.clk.Add(2 * time.Hour)
	if _, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm"); err != nil {
		t.Fatal(err)
	}
	if f.fp.lastRT != "rt-1" {
		t.Fatalf("second refresh used %q, want rt-1", f.fp.lastRT)
	}
}

func TestRefreshOmitsRefreshTokenKeepsOld(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 1)
	f.fp.noRT = true
	if _, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm"); err != nil {
		t.Fatal(err)
	}
	f.clk.Add(2 * time.Hour)
	if _, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm"); err != nil {
		t.Fatal(err)
	}
	if f.fp.lastRT != "rt-0" {
		t.Fatalf("old refresh token not kept: used %q", f.fp.lastRT)
	}
}

func TestInvalidGrantReauthorization(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 1)
	f.fp.err = &oauth.Error{Op: "refresh", HTTPStatus: 400, Code: "invalid_grant"}
	_, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm")
	if !errors.Is(err, ErrReauthorizationRequired) {
		t.Fatalf("want reauth, got %v", err)
	}
	md, _ := f.svc.GetIntegration(ctx, "acme", "crm")
	if md.Status != storage.StatusReauthorizationRequired || md.LastError != "invalid_grant" || md.ConsecutiveFailures != 1 {
		t.Fatalf("metadata %+v", md)
	}
	// No further provider calls: the state is terminal until re-stored.
	_, err = f.svc.AccessToken(ctx, Caller{}, "acme", "crm")
	if !errors.Is(err, ErrReauthorizationRequired) || f.fp.calls.Load() != 1 {
		t.Fatalf("err=%v calls=%d", err, f.fp.calls.Load())
	}
	if got := auditActions(t, f)["token.refresh/failure"]; got != 1 {
		t.Fatalf("token.refresh failures audited: %d", got)
	}
}

func TestTransientFailureDegradedBackoff(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 30) // valid for 30s, inside the margin
	f.fp.err = &oauth.Error{Op: "refresh", HTTPStatus: 503, Code: "temporarily_unavailable"}
	l, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm")
	if err != nil || l.Token.Reveal() != "at-0" {
		t.Fatalf("still-valid token not used: %v", err)
	}
	md, _ := f.svc.GetIntegration(ctx, "acme", "crm")
	if md.Status != storage.StatusDegraded || md.ConsecutiveFailures != 1 {
		t.Fatalf("metadata %+v", md)
	}
	// Within backoff: no new provider call, the old token is used.
	if _, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm"); err != nil || f.fp.calls.Load() != 1 {
		t.Fatalf("err=%v calls=%d", err, f.fp.calls.Load())
	}
	// Expired and still failing: fail closed.
	f.clk.Add(time.Minute)
	if _, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("want unavailable, got %v", err)
	}
	// Provider heals: the next attempt after backoff recovers.
	f.fp.mu.Lock()
	f.fp.err = nil
	f.fp.mu.Unlock()
	f.clk.Add(10 * time.Minute)
	l, err = f.svc.AccessToken(ctx, Caller{}, "acme", "crm")
	if err != nil {
		t.Fatal(err)
	}
	md, _ = f.svc.GetIntegration(ctx, "acme", "crm")
	if md.Status != storage.StatusActive || md.ConsecutiveFailures != 0 || md.LastError != "" {
		t.Fatalf("not recovered: %+v", md)
	}
}

func TestScopeDriftAudited(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 1)
	f.fp.scopes = []string{"a", "admin"}
	if _, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm"); err != nil {
		t.Fatal(err)
	}
	if got := auditActions(t, f)["scope.drift/success"]; got != 1 {
		t.Fatalf("scope.drift events: %d", got)
	}
}

func TestForceRefreshOnlyOnceForSameToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	l, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := f.svc.ForceRefresh(ctx, Caller{}, "acme", "crm", l); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if c := f.fp.calls.Load(); c != 1 {
		t.Fatalf("forced refreshes: %d, want 1", c)
	}
}

func TestTenantIsolationAndDisconnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	if _, err := f.svc.GetIntegration(ctx, "globex", "crm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cross-tenant get: %v", err)
	}
	if _, err := f.svc.AccessToken(ctx, Caller{}, "globex", "crm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cross-tenant use: %v", err)
	}
	if _, err := f.svc.Disconnect(ctx, Caller{Principal: "app"}, "globex", "crm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cross-tenant delete: %v", err)
	}
	if _, err := f.svc.GetIntegration(ctx, "nosuch", "crm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
	revoked, err := f.svc.Disconnect(ctx, Caller{Principal: "app"}, "acme", "crm")
	if err != nil || !revoked {
		t.Fatalf("disconnect: %v %v", revoked, err)
	}
	if len(f.fp.revoked) != 2 || f.fp.revoked[0] != "refresh_token=rt-0" || f.fp.revoked[1] != "access_token=at-0" {
		t.Fatalf("revocation order: %v", f.fp.revoked)
	}
	if _, err := f.svc.GetIntegration(ctx, "acme", "crm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestHSMFailureFailsClosed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	// A new tenant's DEK needs the HSM: with it down, provisioning fails.
	f.kr.Fail.Store(true)
	defer f.kr.Fail.Store(false)
	if _, err := f.svc.CreateTenant(ctx, Caller{Principal: "op"}, "initech"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("create tenant with HSM down: %v", err)
	}
}

func TestUsageFlush(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	f.svc.MarkUsed("acme", "crm")
	md, _ := f.svc.GetIntegration(ctx, "acme", "crm")
	if md.LastUsedAt == nil {
		t.Fatal("last_used_at not visible before flush")
	}
	f.svc.flushUsage(ctx)
	in, err := f.store.GetIntegration(ctx, "acme", "crm")
	if err != nil || in.LastUsedAt.IsZero() {
		t.Fatalf("last_used_at not persisted: %v", err)
	}
}

func TestStoreTokenCommitsItsAuditEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.store0(t, "acme", "crm", 3600)
	if got := auditActions(t, f)["token.store/success"]; got != 1 {
		t.Fatalf("token.store events: %d", got)
	}
	// Into a tenant that does not exist: no record and no success event.
	_, err := f.svc.StoreToken(t.Context(), Caller{Principal: "app"}, "nosuch", "crm", "example",
		oauth.Token{AccessToken: secret.NewString("x")})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
	if got := auditActions(t, f)["token.store/success"]; got != 1 {
		t.Fatalf("token.store events after a failed store: %d", got)
	}
}

// RewrapTenant after a KEK rotation: every DEK version moves under the new
// KEK, tokens sealed under both DEK versions still open (from the HSM, not
// the cache), other tenants are untouched, and HSM trouble changes nothing.
func TestRewrapTenant(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.svc.kekVersion = f.kr.CurrentVersion
	f.store0(t, "acme", "old", 3600) // sealed under DEK 1
	if _, err := f.svc.RotateDEK(ctx, Caller{Principal: "op"}, "acme"); err != nil {
		t.Fatal(err)
	}
	f.store0(t, "acme", "new", 3600) // sealed under DEK 2
	f.kr.Rotate()

	// HSM down: an error, and the tenant record is unchanged.
	f.kr.Fail.Store(true)
	if _, _, err := f.svc.RewrapTenant(ctx, Caller{Principal: "op"}, "acme"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("rewrap with the HSM down: %v", err)
	}
	f.kr.Fail.Store(false)
	if tn, err := f.store.GetTenant(ctx, "acme"); err != nil || tn.DEKs[0].KEKVersion != 1 || tn.DEKs[1].KEKVersion != 1 {
		t.Fatalf("failed rewrap changed the tenant: %+v", tn.DEKs)
	}

	sealedBefore := map[string]storage.Integration{}
	for _, id := range []string{"old", "new"} {
		in, err := f.store.GetIntegration(ctx, "acme", id)
		if err != nil {
			t.Fatal(err)
		}
		sealedBefore[id] = in
	}
	tn, n, err := f.svc.RewrapTenant(ctx, Caller{Principal: "op"}, "acme")
	if err != nil || n != 2 || tn.KEKVersion != 2 {
		t.Fatalf("rewrap: n=%d kek=%d %v", n, tn.KEKVersion, err)
	}
	for _, d := range tn.DEKs {
		if d.KEKVersion != 2 {
			t.Fatalf("DEK %d still under KEK %d", d.Version, d.KEKVersion)
		}
	}
	// Only the DEK wrappings changed: no sealed record was touched.
	for id, before := range sealedBefore {
		in, err := f.store.GetIntegration(ctx, "acme", id)
		if err != nil || in.Revision != before.Revision || !bytes.Equal(in.AccessToken, before.AccessToken) || !bytes.Equal(in.RefreshToken, before.RefreshToken) {
			t.Fatalf("%s changed by the rewrap (%v)", id, err)
		}
	}
	unwrapsBefore := f.kr.Unwraps()
	for _, id := range []string{"old", "new"} {
		l, err := f.svc.AccessToken(ctx, Caller{}, "acme", id)
		if err != nil || l.Token.Reveal() != "at-0" {
			t.Fatalf("%s after rewrap: %v", id, err)
		}
	}
	if f.kr.Unwraps() == unwrapsBefore {
		t.Fatal("tokens opened from the cache: rewrap did not evict the old wrappings")
	}
	if _, n, err := f.svc.RewrapTenant(ctx, Caller{Principal: "op"}, "acme"); err != nil || n != 0 {
		t.Fatalf("second rewrap: n=%d %v", n, err)
	}
	if g, _ := f.store.GetTenant(ctx, "globex"); g.DEKs[0].KEKVersion != 1 {
		t.Fatal("another tenant was rewrapped")
	}
	if _, _, err := f.svc.RewrapTenant(ctx, Caller{Principal: "op"}, "nosuch"); !errors.Is(err, ErrTenantNotFound) && !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing tenant: %v", err)
	}
}

// A tenant or key change whose audit event cannot be committed does not
// happen: the change and its event share one transaction.
func TestKeyChangesNeedTheirAuditEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	before, err := f.store.GetTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	head, _ := f.store.AuditHead(ctx)
	if err := f.audit.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.CreateTenant(ctx, Caller{Principal: "op"}, "initech"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("create without audit: %v", err)
	}
	if _, err := f.store.GetTenant(ctx, "initech"); !errors.Is(err, storage.ErrTenantNotFound) {
		t.Fatalf("tenant created without its event: %v", err)
	}
	if _, err := f.svc.RotateDEK(ctx, Caller{Principal: "op"}, "acme"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("rotate without audit: %v", err)
	}
	f.kr.Rotate()
	f.svc.kekVersion = f.kr.CurrentVersion
	if _, _, err := f.svc.RewrapTenant(ctx, Caller{Principal: "op"}, "acme"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("rewrap without audit: %v", err)
	}
	after, err := f.store.GetTenant(ctx, "acme")
	if err != nil || after.Revision != before.Revision || len(after.DEKs) != 1 || after.DEKs[0].KEKVersion != 1 {
		t.Fatalf("tenant changed without its event: %+v %v", after, err)
	}
	if h, _ := f.store.AuditHead(ctx); h.Seq != head.Seq {
		t.Fatalf("audit head moved: %d -> %d", head.Seq, h.Seq)
	}
}

// The success events are committed by the vault itself, with the change.
func TestKeyChangesAuditedWithTheChange(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	if _, err := f.svc.RotateDEK(ctx, Caller{Principal: "op"}, "acme", WithStatus(200)); err != nil {
		t.Fatal(err)
	}
	f.kr.Rotate()
	f.svc.kekVersion = f.kr.CurrentVersion
	if _, _, err := f.svc.RewrapTenant(ctx, Caller{Principal: "op"}, "acme", WithStatus(200)); err != nil {
		t.Fatal(err)
	}
	var details []string
	err := f.store.ScanAudit(ctx, 0, func(r storage.AuditRecord) (bool, error) {
		ev, err := audit.ParseEvent(r.Data)
		if err != nil {
			return false, err
		}
		if ev.TenantID == "acme" {
			details = append(details, ev.Action+" "+ev.Actor+" "+ev.Detail)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"tenant.create op kek_version=1 dek_version=1", "key.rotate op dek_version=2 kek_version=1", "key.rotate op rewrap deks=2 kek_version=2"}
	if !slices.Equal(details, want) {
		t.Fatalf("events %q, want %q", details, want)
	}
}

// A caller that hangs up once the provider has rotated the refresh token,
// or a DEK cache emptied meanwhile, must not cost the new token: it is
// sealed with the DEK held from before the call and committed detached
// from the caller, so the next refresh presents it.
func TestRotatedRefreshTokenSurvivesCallerCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.store0(t, "acme", "crm", 30) // inside the margin: refresh due
	ctx, cancel := context.WithCancel(t.Context())
	f.fp.mu.Lock()
	f.fp.after = func() {
		cancel()
		f.svc.keys.EvictAll() // and the HSM would have to unwrap again
		f.kr.Fail.Store(true)
	}
	f.fp.mu.Unlock()
	_, _ = f.svc.AccessToken(ctx, Caller{}, "acme", "crm")
	f.svc.bg.Wait() // the caller may stop waiting before the commit
	f.kr.Fail.Store(false)
	f.fp.mu.Lock()
	f.fp.after = nil
	f.fp.mu.Unlock()

	in, err := f.store.GetIntegration(t.Context(), "acme", "crm")
	if err != nil || in.RefreshCount != 1 {
		t.Fatalf("refresh not committed: count %d %v", in.RefreshCount, err)
	}
	f.clk.Add(2 * time.Hour) // expire it: the next call refreshes again
	if _, err := f.svc.AccessToken(t.Context(), Caller{}, "acme", "crm"); err != nil {
		t.Fatal(err)
	}
	f.fp.mu.Lock()
	last := f.fp.lastRT
	f.fp.mu.Unlock()
	if last != "rt-1" {
		t.Fatalf("second refresh presented %q, want the rotated rt-1", last)
	}
}
