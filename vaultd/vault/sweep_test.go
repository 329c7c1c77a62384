package vault

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

const day = 24 * time.Hour

// sweepSettings is a settable SweepSettings source.
type sweepSettingsBox struct {
	mu sync.Mutex
	s  SweepSettings
}

func (b *sweepSettingsBox) get() SweepSettings { b.mu.Lock(); defer b.mu.Unlock(); return b.s }
func (b *sweepSettingsBox) set(s SweepSettings) {
	b.mu.Lock()
	b.s = s
	b.mu.Unlock()
}

// lifeMetrics records the lifecycle metrics.
type lifeMetrics struct {
	nopMetrics
	mu       sync.Mutex
	byStatus map[string]int
	flagged  int
	actions  map[string]int
	bg       map[string]int
}

func (m *lifeMetrics) Integrations(b map[string]int, f int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byStatus, m.flagged = b, f
}

func (m *lifeMetrics) SweepAction(a string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.actions[a]++
}

func (m *lifeMetrics) BackgroundRefresh(reason, outcome string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bg[reason+"/"+outcome]++
}

func newSweepFixture(t *testing.T, s SweepSettings, opts ...func(*Options)) (*fixture, *sweepSettingsBox, *lifeMetrics) {
	t.Helper()
	box := &sweepSettingsBox{s: s}
	m := &lifeMetrics{actions: map[string]int{}, bg: map[string]int{}}
	all := append([]func(*Options){func(o *Options) { o.Sweeps = box.get; o.Metrics = m }}, opts...)
	return newFixture(t, all...), box, m
}

// events lists the audit events of action.
func events(t *testing.T, f *fixture, action string) []audit.Event {
	t.Helper()
	var out []audit.Event
	err := f.audit.Query(t.Context(), audit.Filter{Limit: 10000}, func(line []byte) error {
		ev, err := audit.ParseEvent(line)
		if err != nil {
			return err
		}
		if ev.Action == action {
			out = append(out, ev)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func disableTenant(t *testing.T, f *fixture, id string) {
	t.Helper()
	tn, err := f.store.GetTenant(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	tn.Status = storage.TenantDisabled
	if _, _, err := f.store.UpdateTenant(t.Context(), tn, nil); err != nil {
		t.Fatal(err)
	}
}

func TestSweepIdleDisconnect(t *testing.T) {
	t.Parallel()
	f, _, m := newSweepFixture(t, SweepSettings{IdleDisconnectAfter: 90 * day, ScoreThreshold: 0})
	ctx := t.Context()
	f.store0(t, "acme", "idle", 3600)
	f.store0(t, "acme", "busy", 3600)
	f.store0(t, "globex", "idle", 3600) // a disabled tenant's: left alone
	disableTenant(t, f, "globex")

	f.clk.Add(80 * day)
	f.svc.MarkUsed("acme", "busy")
	if r, err := f.svc.Sweep(ctx); err != nil || r.Disconnected != 0 {
		t.Fatalf("early sweep: %+v %v", r, err)
	}
	f.clk.Add(11 * day) // idle: 91 days since stored; busy: used 11 days ago
	r, err := f.svc.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Disconnected != 1 || r.ByStatus[storage.StatusActive] != 3 {
		t.Fatalf("sweep result %+v", r)
	}
	if _, err := f.svc.GetIntegration(ctx, "acme", "idle"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("idle integration kept: %v", err)
	}
	for _, id := range [][2]string{{"acme", "busy"}, {"globex", "idle"}} {
		if _, err := f.store.GetIntegration(ctx, id[0], id[1]); err != nil {
			t.Fatalf("%v removed: %v", id, err)
		}
	}
	// Revoked at the provider through Disconnect, refresh token first.
	if len(f.fp.revoked) != 2 || f.fp.revoked[0] != "refresh_token=rt-0" {
		t.Fatalf("revocations %v", f.fp.revoked)
	}
	sw := events(t, f, audit.ActionIntegrationSweep)
	if len(sw) != 1 || sw[0].Actor != SweepPrincipal || sw[0].IntegrationID != "idle" || sw[0].TenantID != "acme" ||
		!strings.HasPrefix(sw[0].Detail, "idle_disconnect") {
		t.Fatalf("sweep events %+v", sw)
	}
	del := events(t, f, audit.ActionIntegrationDelete)
	if len(del) != 1 || del[0].Actor != SweepPrincipal || del[0].Seq <= sw[0].Seq {
		t.Fatalf("delete events %+v", del)
	}
	if m.actions[SweepIdleDisconnect] != 1 {
		t.Fatalf("metrics %+v", m.actions)
	}
}

func TestSweepReauthPurge(t *testing.T) {
	t.Parallel()
	f, box, _ := newSweepFixture(t, SweepSettings{ReauthPurgeAfter: 30 * day})
	ctx := t.Context()
	f.store0(t, "acme", "stuck", 1)
	f.store0(t, "acme", "fine", 3600)
	f.fp.err = &oauth.Error{Op: "refresh", HTTPStatus: 400, Code: "invalid_grant"}
	if _, err := f.svc.AccessToken(ctx, Caller{}, "acme", "stuck"); !errors.Is(err, ErrReauthorizationRequired) {
		t.Fatal(err)
	}
	f.clk.Add(29 * day)
	if r, _ := f.svc.Sweep(ctx); r.Purged != 0 || r.ByStatus[storage.StatusReauthorizationRequired] != 1 {
		t.Fatalf("early purge %+v", r)
	}
	box.set(SweepSettings{}) // 0 = off
	f.clk.Add(2 * day)
	if r, _ := f.svc.Sweep(ctx); r.Purged != 0 {
		t.Fatalf("purged while off %+v", r)
	}
	box.set(SweepSettings{ReauthPurgeAfter: 30 * day})
	r, err := f.svc.Sweep(ctx)
	if err != nil || r.Purged != 1 || r.Disconnected != 0 {
		t.Fatalf("purge %+v %v", r, err)
	}
	if _, err := f.svc.GetIntegration(ctx, "acme", "stuck"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stuck kept: %v", err)
	}
	if _, err := f.svc.GetIntegration(ctx, "acme", "fine"); err != nil {
		t.Fatal(err)
	}
	sw := events(t, f, audit.ActionIntegrationSweep)
	if len(sw) != 1 || !strings.HasPrefix(sw[0].Detail, "reauth_purge") {
		t.Fatalf("sweep events %+v", sw)
	}
}

func TestSweepFlaggedTransitions(t *testing.T) {
	t.Parallel()
	f, _, m := newSweepFixture(t, SweepSettings{ScoreThreshold: 95})
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	if r, _ := f.svc.Sweep(ctx); r.Flagged != 0 || r.NewlyFlagged != 0 {
		t.Fatalf("healthy flagged: %+v", r)
	}
	f.clk.Add(31 * day) // never used for 31 days: last_use fails, score 90
	r, err := f.svc.Sweep(ctx)
	if err != nil || r.Flagged != 1 || r.NewlyFlagged != 1 {
		t.Fatalf("flag: %+v %v", r, err)
	}
	if m.flagged != 1 || m.actions["flagged"] != 1 {
		t.Fatalf("metrics flagged=%d actions=%v", m.flagged, m.actions)
	}
	// Still flagged: no second event.
	if r, _ := f.svc.Sweep(ctx); r.Flagged != 1 || r.NewlyFlagged != 0 {
		t.Fatalf("re-flag: %+v", r)
	}
	ev := events(t, f, audit.ActionIntegrationFlagged)
	if len(ev) != 1 || ev[0].Detail != "score=90" || ev[0].Actor != SweepPrincipal || ev[0].IntegrationID != "crm" {
		t.Fatalf("flag events %+v", ev)
	}
	// Used again: recovers; idle again later: a new event.
	f.svc.MarkUsed("acme", "crm")
	if r, _ := f.svc.Sweep(ctx); r.Flagged != 0 {
		t.Fatalf("not recovered: %+v", r)
	}
	f.clk.Add(31 * day)
	if r, _ := f.svc.Sweep(ctx); r.NewlyFlagged != 1 {
		t.Fatalf("second flag: %+v", r)
	}
	if n := len(events(t, f, audit.ActionIntegrationFlagged)); n != 2 {
		t.Fatalf("flag events %d", n)
	}
}

func factor(h Health, name string) HealthFactor {
	for _, f := range h.Factors {
		if f.Name == name {
			return f
		}
	}
	return HealthFactor{Name: "missing"}
}

func TestHealthFactors(t *testing.T) {
	t.Parallel()
	f, _, _ := newSweepFixture(t, SweepSettings{ScoreThreshold: 60})
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	h, err := f.svc.IntegrationHealth(ctx, "acme", "crm")
	if err != nil {
		t.Fatal(err)
	}
	if h.Score != 100 || h.Flagged || len(h.Factors) != 7 {
		t.Fatalf("fresh: %+v", h)
	}
	if _, err := f.svc.IntegrationHealth(ctx, "globex", "crm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("foreign: %v", err)
	}
	if _, err := f.svc.IntegrationHealth(ctx, "acme", "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}

	// A new DEK: the tokens are sealed with the old one.
	if _, err := f.svc.RotateDEK(ctx, Caller{Principal: "op"}, "acme"); err != nil {
		t.Fatal(err)
	}
	h, _ = f.svc.IntegrationHealth(ctx, "acme", "crm")
	if fk := factor(h, HealthKeyVersions); fk.OK || !strings.Contains(fk.Detail, "data key 1") || h.Score != 85 {
		t.Fatalf("key versions: %+v", h)
	}
	// A scope outside the inventory.
	_, err = f.svc.StoreToken(ctx, Caller{Principal: "app"}, "acme", "wide", "example", oauth.Token{
		AccessToken: secret.NewString("at-w"), RefreshToken: secret.NewString("rt-w"), ExpiresIn: 3600, Scope: []string{"a", "admin"},
	})
	if err != nil {
		t.Fatal(err)
	}
	h, _ = f.svc.IntegrationHealth(ctx, "acme", "wide")
	if fs := factor(h, HealthScopes); fs.OK || !strings.Contains(fs.Detail, "admin") {
		t.Fatalf("scopes: %+v", h)
	}
	// Refresh failures.
	f.fp.err = &oauth.Error{Op: "refresh", HTTPStatus: 503, Code: "temporarily_unavailable"}
	f.clk.Add(59*time.Minute + 30*time.Second)
	_, _ = f.svc.AccessToken(ctx, Caller{}, "acme", "wide")
	h, _ = f.svc.IntegrationHealth(ctx, "acme", "wide")
	if fr := factor(h, HealthRefreshFailures); fr.OK || !strings.Contains(fr.Detail, "degraded") {
		t.Fatalf("refresh failures: %+v", h)
	}
	// Idleness and token age, 100 days on: flagged (key age is the
	// envelope's clock's, checked in TestHealthPendingRevocationAndTokenAge).
	f.clk.Add(100 * day)
	h, _ = f.svc.IntegrationHealth(ctx, "acme", "crm")
	for _, n := range []string{HealthLastUse, HealthTokenAge} {
		if factor(h, n).OK {
			t.Fatalf("%s holds after 100 days: %+v", n, h)
		}
	}
	want := 60
	if !factor(h, HealthKeyAge).OK {
		want = 50
	}
	if h.Score != want || h.Flagged != (want < 60) {
		t.Fatalf("old: %+v", h)
	}
}

func TestHealthPendingRevocationAndTokenAge(t *testing.T) {
	t.Parallel()
	p := &Provider{Name: "p", Scopes: []string{"a"}, RefreshTokenMaxIdle: 10 * day}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tn := storage.Tenant{ID: "acme", DEKVersion: 1, KEKVersion: 1, DEKs: []storage.WrappedDEK{{Version: 1, KEKVersion: 1, CreatedAt: now}}}
	in := storage.Integration{ID: "i", TenantID: "acme", Provider: "p", Status: storage.StatusActive, Scopes: []string{"a"}, CreatedAt: now}
	h := scoreHealth(healthInput{t: tn, in: in, p: p, pending: 1, kek: 1, now: now.Add(11 * day), cfg: SweepSettings{ScoreThreshold: 60}})
	if factor(h, HealthPendingRevocation).OK || factor(h, HealthTokenAge).OK || !factor(h, HealthKeyVersions).OK {
		t.Fatalf("%+v", h)
	}
	// A data key older than KeyMaxAge.
	h = scoreHealth(healthInput{t: tn, in: in, p: p, kek: 1, now: now.Add(KeyMaxAge + day), cfg: SweepSettings{ScoreThreshold: 60}})
	if fk := factor(h, HealthKeyAge); fk.OK || !strings.Contains(fk.Detail, "91d") {
		t.Fatalf("%+v", h)
	}
	// The KEK moved on: key_versions fails until rewrap.
	h = scoreHealth(healthInput{t: tn, in: in, p: p, kek: 2, now: now, cfg: SweepSettings{ScoreThreshold: 60}})
	if factor(h, HealthKeyVersions).OK || h.Score != 85 {
		t.Fatalf("%+v", h)
	}
	// Client credentials: token age always holds; an unknown provider fails scopes.
	in.Grant = GrantClientCredentials
	h = scoreHealth(healthInput{t: tn, in: in, kek: 1, now: now.Add(11 * day), cfg: SweepSettings{ScoreThreshold: 60}})
	if !factor(h, HealthTokenAge).OK || factor(h, HealthScopes).OK {
		t.Fatalf("%+v", h)
	}
}

func TestFleetFiltersAndPagination(t *testing.T) {
	t.Parallel()
	f, _, _ := newSweepFixture(t, SweepSettings{ScoreThreshold: 95})
	ctx := t.Context()
	for _, id := range []string{"a1", "a2", "a3"} {
		f.store0(t, "acme", id, 3600)
	}
	f.store0(t, "globex", "g1", 3600)
	f.clk.Add(31 * day)
	f.svc.MarkUsed("acme", "a2") // the only one not flagged

	var all []string
	q := FleetQuery{Limit: 2}
	for range 10 {
		p, err := f.svc.Fleet(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Entries {
			all = append(all, e.Metadata.TenantID+"/"+e.Metadata.ID)
		}
		if p.NextTenant == "" {
			break
		}
		q.AfterTenant, q.AfterID = p.NextTenant, p.NextID
	}
	if strings.Join(all, ",") != "acme/a1,acme/a2,acme/a3,globex/g1" {
		t.Fatalf("pages: %v", all)
	}
	yes, no := true, false
	for _, c := range []struct {
		q    FleetQuery
		want string
	}{
		{FleetQuery{TenantID: "globex"}, "g1"},
		{FleetQuery{TenantID: "nosuch"}, ""},
		{FleetQuery{Flagged: &no}, "a2"},
		{FleetQuery{Flagged: &yes, TenantID: "acme"}, "a1,a3"},
		{FleetQuery{Provider: "other"}, ""},
		{FleetQuery{Status: storage.StatusDegraded}, ""},
		{FleetQuery{Status: storage.StatusActive, AfterTenant: "acme", AfterID: "a2"}, "a3,g1"},
	} {
		p, err := f.svc.Fleet(ctx, c.q)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range p.Entries {
			got = append(got, e.Metadata.ID)
			if e.Health.Flagged != (e.Health.Score < 95) {
				t.Fatalf("flag/score mismatch %+v", e.Health)
			}
		}
		if strings.Join(got, ",") != c.want || p.NextTenant != "" {
			t.Fatalf("%+v: got %v next %q", c.q, got, p.NextTenant)
		}
	}
}

// TestSweepSparesAReconnect: a token stored again (a reconnect) starts the
// idle clock again, though the integration's created_at is old and it was
// never used since.
func TestSweepSparesAReconnect(t *testing.T) {
	t.Parallel()
	f, _, _ := newSweepFixture(t, SweepSettings{IdleDisconnectAfter: 30 * day, ScoreThreshold: 0})
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	f.clk.Add(40 * day)
	f.store0(t, "acme", "crm", 3600) // reconnected today
	if r, err := f.svc.Sweep(ctx); err != nil || r.Disconnected != 0 {
		t.Fatalf("sweep after a reconnect: %+v %v", r, err)
	}
	if _, err := f.svc.GetIntegration(ctx, "acme", "crm"); err != nil {
		t.Fatalf("the reconnected integration was swept: %v", err)
	}
	f.clk.Add(31 * day)
	if r, err := f.svc.Sweep(ctx); err != nil || r.Disconnected != 1 {
		t.Fatalf("sweep 31 days after the reconnect: %+v %v", r, err)
	}
}
