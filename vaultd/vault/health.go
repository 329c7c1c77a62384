package vault

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/envelope"
)

// Health scores (GET /v1/integrations/{id}/health, the fleet view and the
// sweep's integration.flagged events). The score is the sum of the weights
// of the factors that hold, 0..100:
//
//	key_versions       15  the tenant's current DEK is wrapped under the current KEK and the
//	                       tokens are sealed with the current DEK version
//	key_age            10  the current DEK is younger than KeyMaxAge (90 days)
//	scopes             15  the granted scopes are within the provider's inventory
//	refresh_failures   20  status active and no consecutive refresh failure
//	last_use           10  used (or, never used, created) within the idle window: half of
//	                       [lifecycle] idle_disconnect_after when set (a warning before the
//	                       sweep disconnects it), else DefaultIdleWindow (30 days)
//	token_age          15  refreshed (or, never refreshed, stored) within the provider's
//	                       refresh_token_max_idle when set, else DefaultTokenMaxAge (90 days);
//	                       client-credentials integrations always hold it
//	pending_revocation 15  no revocation of this integration is still pending
//
// An integration is flagged when its score is below [lifecycle]
// score_threshold.
const (
	HealthKeyVersions       = "key_versions"
	HealthKeyAge            = "key_age"
	HealthScopes            = "scopes"
	HealthRefreshFailures   = "refresh_failures"
	HealthLastUse           = "last_use"
	HealthTokenAge          = "token_age"
	HealthPendingRevocation = "pending_revocation"

	// KeyMaxAge is the DEK age past which key_age fails (rotate-dek).
	KeyMaxAge = 90 * 24 * time.Hour
	// DefaultIdleWindow is last_use's window without idle_disconnect_after.
	DefaultIdleWindow = 30 * 24 * time.Hour
	// DefaultTokenMaxAge is token_age's limit without refresh_token_max_idle.
	DefaultTokenMaxAge = 90 * 24 * time.Hour
	// DefaultScoreThreshold is used when no SweepSettings are given.
	DefaultScoreThreshold = 60
)

// healthWeights are the factors in the order answers list them.
var healthWeights = []struct {
	name   string
	weight int
}{
	{HealthKeyVersions, 15}, {HealthKeyAge, 10}, {HealthScopes, 15}, {HealthRefreshFailures, 20},
	{HealthLastUse, 10}, {HealthTokenAge, 15}, {HealthPendingRevocation, 15},
}

// HealthFactor is one factor of a score: whether it holds and why, in
// words without a secret.
type HealthFactor struct {
	Name   string
	OK     bool
	Detail string
}

// Health is an integration's score.
type Health struct {
	Score   int
	Flagged bool
	Factors []HealthFactor
}

// SweepSettings are [lifecycle]'s values the service uses; the
// daemon passes a function reading the live config (Options.Sweeps).
type SweepSettings struct {
	IdleDisconnectAfter time.Duration // 0 = off
	ReauthPurgeAfter    time.Duration // 0 = off
	ScoreThreshold      int
}

func (s *Service) sweepSettings() SweepSettings {
	if f := s.sweeps.settings; f != nil {
		return f()
	}
	return SweepSettings{ScoreThreshold: DefaultScoreThreshold}
}

// healthInput is what one score is computed from; it reads nothing.
type healthInput struct {
	t        storage.Tenant
	in       storage.Integration
	p        *Provider // nil when the provider is not configured
	lastUsed time.Time
	pending  int
	kek      uint32
	now      time.Time
	cfg      SweepSettings
}

func ago(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d >= 48*time.Hour {
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
	return d.Round(time.Second).String()
}

// scoreHealth computes the score (see the table above).
func scoreHealth(h healthInput) Health {
	ok := map[string]HealthFactor{}
	set := func(name string, good bool, format string, args ...any) {
		ok[name] = HealthFactor{Name: name, OK: good, Detail: fmt.Sprintf(format, args...)}
	}
	in, t := h.in, h.t

	// key_versions
	cur, hasDEK := t.CurrentDEK()
	switch {
	case !hasDEK:
		set(HealthKeyVersions, false, "tenant has no current data key")
	case cur.KEKVersion != h.kek:
		set(HealthKeyVersions, false, "data key %d wrapped under kek %d, current kek %d (rewrap)", cur.Version, cur.KEKVersion, h.kek)
	default:
		stale := uint32(0)
		for _, ct := range [][]byte{in.AccessToken, in.RefreshToken} {
			if len(ct) == 0 {
				continue
			}
			if hd, err := envelope.ParseHeader(ct); err == nil && hd.DEKVersion != t.DEKVersion {
				stale = hd.DEKVersion
			}
		}
		if stale != 0 {
			set(HealthKeyVersions, false, "tokens sealed with data key %d, current %d (resealed on the next refresh)", stale, t.DEKVersion)
		} else {
			set(HealthKeyVersions, true, "kek_version=%d dek_version=%d", h.kek, t.DEKVersion)
		}
	}
	// key_age
	if hasDEK && !cur.CreatedAt.IsZero() {
		age := h.now.Sub(cur.CreatedAt)
		set(HealthKeyAge, age < KeyMaxAge, "data key %d is %s old (rotate after %s)", cur.Version, ago(age), ago(KeyMaxAge))
	} else {
		set(HealthKeyAge, false, "data key age unknown")
	}
	// scopes
	if h.p == nil {
		set(HealthScopes, false, "provider not configured")
	} else if extra := outside(in.Scopes, h.p.Scopes); len(extra) > 0 {
		set(HealthScopes, false, "outside the inventory: %s", cut(joinScopes(extra), 200))
	} else {
		set(HealthScopes, true, "granted scopes within the inventory")
	}
	// refresh_failures
	if in.Status == storage.StatusActive && in.ConsecutiveFailures == 0 {
		set(HealthRefreshFailures, true, "status=%s", in.Status)
	} else {
		d := fmt.Sprintf("status=%s consecutive_failures=%d", in.Status, in.ConsecutiveFailures)
		if in.LastError != "" {
			d += " last_error=" + cut(in.LastError, 64)
		}
		set(HealthRefreshFailures, false, "%s", d)
	}
	// last_use
	window := DefaultIdleWindow
	if h.cfg.IdleDisconnectAfter > 0 {
		window = h.cfg.IdleDisconnectAfter / 2
	}
	if h.lastUsed.IsZero() {
		age := h.now.Sub(in.CreatedAt)
		set(HealthLastUse, age < window, "never used, stored %s ago (idle after %s)", ago(age), ago(window))
	} else {
		age := h.now.Sub(h.lastUsed)
		set(HealthLastUse, age < window, "last used %s ago (idle after %s)", ago(age), ago(window))
	}
	// token_age
	switch {
	case in.Grant == GrantClientCredentials:
		set(HealthTokenAge, true, "client_credentials: obtained on demand")
	default:
		limit := DefaultTokenMaxAge
		if h.p != nil && h.p.RefreshTokenMaxIdle > 0 {
			limit = h.p.RefreshTokenMaxIdle
		}
		last, what := in.LastRefreshAt, "refreshed"
		if last.IsZero() || last.Before(in.CreatedAt) {
			last, what = in.CreatedAt, "stored, never refreshed,"
		}
		age := h.now.Sub(last)
		set(HealthTokenAge, age < limit, "%s %s ago (expected within %s)", what, ago(age), ago(limit))
	}
	// pending_revocation
	if h.pending > 0 {
		set(HealthPendingRevocation, false, "%d revocation(s) pending at the provider", h.pending)
	} else {
		set(HealthPendingRevocation, true, "none pending")
	}

	out := Health{Factors: make([]HealthFactor, 0, len(healthWeights))}
	for _, w := range healthWeights {
		f := ok[w.name]
		if f.OK {
			out.Score += w.weight
		}
		out.Factors = append(out.Factors, f)
	}
	out.Flagged = out.Score < h.cfg.ScoreThreshold
	return out
}

// outside lists the granted scopes the inventory lacks (an empty
// inventory declares none, as for scope drift).
func outside(granted, inventory []string) []string {
	var out []string
	for _, g := range granted {
		if !slices.Contains(inventory, g) {
			out = append(out, g)
		}
	}
	return out
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// pendingRevocations counts the pending revocations of each integration,
// keyed by tenant and integration; empty when the store keeps none.
func (s *Service) pendingRevocations(ctx context.Context) (map[[2]string]int, error) {
	out := map[[2]string]int{}
	rs, ok := s.store.(storage.RevocationStore)
	if !ok {
		return out, nil
	}
	list, err := rs.ListRevocations(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: pending revocations: %w", ErrUnavailable, err)
	}
	for _, r := range list {
		out[[2]string{r.TenantID, r.IntegrationID}]++
	}
	return out, nil
}

// lastUsed is the integration's last use, the unflushed one included.
func (s *Service) lastUsed(in storage.Integration) time.Time {
	used := in.LastUsedAt
	if u, ok := s.usage.get(in.TenantID, in.ID); ok && u.After(used) {
		used = u
	}
	return used
}

func (s *Service) scoreOf(t storage.Tenant, in storage.Integration, pending map[[2]string]int, cfg SweepSettings, now time.Time) Health {
	p, _ := s.Provider(in.Provider)
	return scoreHealth(healthInput{
		t: t, in: in, p: p, lastUsed: s.lastUsed(in), pending: pending[[2]string{t.ID, in.ID}],
		kek: s.kekVersion(), now: now, cfg: cfg,
	})
}

// IntegrationHealth scores one of the tenant's integrations; a missing or
// foreign one is ErrNotFound.
func (s *Service) IntegrationHealth(ctx context.Context, tenantID, id string) (Health, error) {
	in, err := s.get(ctx, tenantID, id)
	if err != nil {
		return Health{}, err
	}
	t, err := s.tenant(ctx, tenantID)
	if err != nil {
		return Health{}, err
	}
	pending, err := s.pendingRevocations(ctx)
	if err != nil {
		return Health{}, err
	}
	return s.scoreOf(t, in, pending, s.sweepSettings(), s.now()), nil
}

// FleetQuery filters and pages the fleet view. Zero values match all.
type FleetQuery struct {
	TenantID string
	Provider string
	Status   string
	Flagged  *bool
	// Limit is the page size (DefaultFleetLimit when 0, at most
	// MaxFleetLimit).
	Limit int
	// AfterTenant and AfterID: the page starts after this integration
	// (the previous page's Next).
	AfterTenant, AfterID string
}

// Fleet view bounds.
const (
	DefaultFleetLimit = 100
	MaxFleetLimit     = 1000
	// fleetScanMax bounds the integrations one page reads: a page with
	// a narrow filter over a large fleet ends early, with a Next.
	fleetScanMax = 10000
)

// FleetEntry is one integration of the fleet view: metadata and score,
// never a token.
type FleetEntry struct {
	Metadata Metadata
	Health   Health
}

// FleetPage is one page of the fleet view. NextTenant/NextID are empty on
// the last page; otherwise the next page starts after them.
type FleetPage struct {
	Entries            []FleetEntry
	NextTenant, NextID string
}

// Fleet lists integrations across tenants (operator), ordered by tenant
// then integration id, with their health.
func (s *Service) Fleet(ctx context.Context, q FleetQuery) (FleetPage, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultFleetLimit
	}
	limit = min(limit, MaxFleetLimit)
	var tenants []storage.Tenant
	if q.TenantID != "" {
		t, err := s.GetTenant(ctx, q.TenantID)
		switch {
		case errors.Is(err, ErrTenantNotFound):
			return FleetPage{Entries: []FleetEntry{}}, nil
		case err != nil:
			return FleetPage{}, err
		}
		tenants = []storage.Tenant{t}
	} else {
		ts, err := s.ListTenants(ctx)
		if err != nil {
			return FleetPage{}, err
		}
		tenants = ts
	}
	sort.Slice(tenants, func(i, j int) bool { return tenants[i].ID < tenants[j].ID })
	pending, err := s.pendingRevocations(ctx)
	if err != nil {
		return FleetPage{}, err
	}
	cfg, now := s.sweepSettings(), s.now()
	page := FleetPage{Entries: []FleetEntry{}}
	scanned := 0
	for _, t := range tenants {
		if t.ID < q.AfterTenant {
			continue
		}
		ins, err := s.store.ListIntegrations(ctx, t.ID)
		if err != nil {
			return FleetPage{}, s.storeErr(err)
		}
		for _, in := range ins {
			if t.ID == q.AfterTenant && in.ID <= q.AfterID {
				continue
			}
			if len(page.Entries) == limit || scanned == fleetScanMax {
				// More may follow: the next page starts after the
				// last one looked at.
				return page, nil
			}
			scanned++
			page.NextTenant, page.NextID = t.ID, in.ID
			if (q.Provider != "" && in.Provider != q.Provider) || (q.Status != "" && in.Status != q.Status) {
				continue
			}
			h := s.scoreOf(t, in, pending, cfg, now)
			if q.Flagged != nil && h.Flagged != *q.Flagged {
				continue
			}
			page.Entries = append(page.Entries, FleetEntry{Metadata: s.metadata(in), Health: h})
		}
	}
	page.NextTenant, page.NextID = "", ""
	return page, nil
}
