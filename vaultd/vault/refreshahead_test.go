package vault

import (
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
)

func withProvider(fn func(p *Provider)) func(*Options) {
	return func(o *Options) {
		p := *o.Providers["example"]
		fn(&p)
		o.Providers = Providers{"example": &p}
	}
}

func TestRefreshAheadNoCallerWaits(t *testing.T) {
	t.Parallel()
	f, _, m := newSweepFixture(t, SweepSettings{}, withProvider(func(p *Provider) { p.RefreshAhead = true }))
	ctx := t.Context()
	f.store0(t, "acme", "used", 3600)
	f.store0(t, "acme", "unused", 3600)
	f.svc.MarkUsed("acme", "used")

	// 50 minutes in: expiry is 10 minutes off, beyond margin (1m) + lead (2m).
	f.clk.Add(50 * time.Minute)
	if r, err := f.svc.RefreshAheadRound(ctx, time.Minute); err != nil || r.Refreshed != 0 {
		t.Fatalf("early: %+v %v", r, err)
	}
	f.clk.Add(7*time.Minute + 30*time.Second) // 2.5 minutes left: inside margin + lead
	r, err := f.svc.RefreshAheadRound(ctx, time.Minute)
	if err != nil || r.Refreshed != 1 || f.fp.calls.Load() != 1 {
		t.Fatalf("round: %+v %v calls=%d", r, err, f.fp.calls.Load())
	}
	// The caller finds the new token: no provider call of its own.
	f.clk.Add(90 * time.Second) // inside the old token's margin
	l, err := f.svc.AccessToken(ctx, Caller{Principal: "app"}, "acme", "used")
	if err != nil || l.Token.Reveal() != "at-1" || f.fp.calls.Load() != 1 {
		t.Fatalf("lease %q %v calls=%d", l.Token.Reveal(), err, f.fp.calls.Load())
	}
	// A fresh token is not refreshed again.
	if r, _ := f.svc.RefreshAheadRound(ctx, time.Minute); r.Refreshed != 0 {
		t.Fatalf("second round %+v", r)
	}
	var ahead []audit.Event
	for _, ev := range events(t, f, audit.ActionTokenRefresh) {
		if ev.Actor == SweepPrincipal {
			ahead = append(ahead, ev)
		}
	}
	if len(ahead) != 1 || ahead[0].Detail != ReasonRefreshAhead || ahead[0].IntegrationID != "used" || ahead[0].Outcome != audit.OutcomeSuccess {
		t.Fatalf("events %+v", ahead)
	}
	if m.bg["refresh_ahead/success"] != 1 {
		t.Fatalf("metrics %v", m.bg)
	}
}

func TestRefreshAheadFailureIsDegraded(t *testing.T) {
	t.Parallel()
	f, _, m := newSweepFixture(t, SweepSettings{}, withProvider(func(p *Provider) { p.RefreshAhead = true }))
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	f.svc.MarkUsed("acme", "crm")
	f.clk.Add(58 * time.Minute)
	f.fp.err = errTokenTooLarge
	r, err := f.svc.RefreshAheadRound(ctx, time.Minute)
	if err != nil || r.Failed != 1 {
		t.Fatalf("%+v %v", r, err)
	}
	evs := events(t, f, audit.ActionTokenRefresh)
	if len(evs) != 1 || !strings.HasPrefix(evs[0].Detail, "degraded: ") || !strings.HasSuffix(evs[0].Detail, "; refresh_ahead") {
		t.Fatalf("events %+v", evs)
	}
	if m.bg["refresh_ahead/failure"] != 1 {
		t.Fatalf("metrics %v", m.bg)
	}
}

func TestKeepAlive(t *testing.T) {
	t.Parallel()
	f, _, _ := newSweepFixture(t, SweepSettings{}, withProvider(func(p *Provider) { p.RefreshTokenMaxIdle = 60 * day }))
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	disableTenant(t, f, "globex")
	f.store0(t, "acme", "later", 3600)
	f.clk.Add(59 * day)
	if r, _ := f.svc.RefreshAheadRound(ctx, time.Minute); r.Refreshed != 0 {
		t.Fatalf("early %+v", r)
	}
	f.clk.Add(day)
	r, err := f.svc.RefreshAheadRound(ctx, time.Minute)
	if err != nil || r.Refreshed != 2 || f.fp.calls.Load() != 2 {
		t.Fatalf("%+v %v", r, err)
	}
	if r, _ := f.svc.RefreshAheadRound(ctx, time.Minute); r.Refreshed != 0 {
		t.Fatalf("again %+v", r)
	}
	for _, ev := range events(t, f, audit.ActionTokenRefresh) {
		if ev.Detail != ReasonKeepAlive || ev.Actor != SweepPrincipal {
			t.Fatalf("event %+v", ev)
		}
	}
	md, _ := f.svc.GetIntegration(ctx, "acme", "crm")
	if md.RefreshCount != 1 {
		t.Fatalf("%+v", md)
	}
}

func TestRefreshAheadBucket(t *testing.T) {
	t.Parallel()
	var l sweepState
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range RefreshAheadBurst {
		if w := l.reserve("p", now); w != 0 {
			t.Fatalf("burst %d waits %v", i, w)
		}
	}
	if w := l.reserve("p", now); w != 500*time.Millisecond {
		t.Fatalf("over the burst: %v", w)
	}
	if w := l.reserve("q", now); w != 0 {
		t.Fatalf("another provider waits %v", w)
	}
	if w := l.reserve("p", now.Add(10*time.Second)); w != 0 {
		t.Fatalf("refilled: %v", w)
	}
}

func TestRefreshDueGuards(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// A margin longer than the lifetime: a token younger than half its
	// lifetime is never refreshed ahead.
	p := &Provider{RefreshAhead: true, RefreshMargin: 2 * time.Hour}
	f := newFixtureIntegration(now)
	if r := refreshDue(f, p, now, now.Add(10*time.Minute), time.Minute); r != "" {
		t.Fatalf("young token due: %q", r)
	}
	if r := refreshDue(f, p, now, now.Add(31*time.Minute), time.Minute); r != ReasonRefreshAhead {
		t.Fatalf("half-life token: %q", r)
	}
	// Not used within max(24h, 2 lifetimes).
	if r := refreshDue(f, p, now.Add(-25*time.Hour), now.Add(31*time.Minute), time.Minute); r != "" {
		t.Fatalf("unused: %q", r)
	}
}

func newFixtureIntegration(now time.Time) storage.Integration {
	return storage.Integration{ID: "i", Status: storage.StatusActive, CreatedAt: now, ExpiresAt: now.Add(time.Hour), RefreshToken: []byte("ct")}
}
