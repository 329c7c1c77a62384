package vault

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// Background refreshes (daemon's refresh-ahead loop, one round every
// RefreshAheadInterval):
//
//   - refresh_ahead (provider refresh_ahead = true): an integration used
//     within max(24h, twice its token lifetime) whose token expires within
//     the provider's refresh_margin plus twice the round interval is
//     refreshed now, so callers find a fresh token and never wait. A token
//     younger than half its lifetime is never refreshed ahead (a margin
//     longer than the lifetime would otherwise refresh every round).
//   - keep_alive (provider refresh_token_max_idle > 0): an integration with
//     a refresh token whose last refresh (or, never refreshed, its storing)
//     is older than refresh_token_max_idle is refreshed, used or not.
//
// Only integrations of enabled tenants, active (or degraded past their
// backoff), are considered. Each refresh goes through the callers' path:
// the integration's lock, a re-read and a second decision under it, the
// same commit (exactly one refresh against concurrent callers: a caller
// arriving meanwhile waits on the lock and gets the new token). They are
// audited as token.refresh by "vaultd" with the reason in the detail
// ("refresh_ahead", "keep_alive"; a failure's "degraded: ..." ends with
// "; refresh_ahead").
//
// Spreading: candidates are taken in random order, at most
// RefreshAheadMaxPerRound per round, one at a time, through a token bucket
// per provider (RefreshAheadRate per second, bursts of RefreshAheadBurst),
// so a restart over thousands of due integrations does not fire them at
// once.
const (
	RefreshAheadInterval    = time.Minute
	RefreshAheadRate        = 2.0
	RefreshAheadBurst       = 5
	RefreshAheadMaxPerRound = 1000
	// refreshAheadUseWindow is the least "recently used" window.
	refreshAheadUseWindow = 24 * time.Hour
)

// Background refresh reasons (token.refresh details, metric labels).
const (
	ReasonRefreshAhead = "refresh_ahead"
	ReasonKeepAlive    = "keep_alive"
)

type refreshReasonKey struct{}

// withRefreshReason marks ctx as a background refresh's.
func withRefreshReason(ctx context.Context, reason string) context.Context {
	return context.WithValue(ctx, refreshReasonKey{}, reason)
}

// backgroundDetail adds the background reason carried by ctx, if any, to a
// token.refresh detail.
func backgroundDetail(ctx context.Context, detail string) string {
	r, _ := ctx.Value(refreshReasonKey{}).(string)
	switch {
	case r == "":
		return detail
	case detail == "":
		return r
	default:
		return detail + "; " + r
	}
}

// tokenBucket is one provider's refresh budget.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

// reserve takes one token from provider's bucket and says how long to
// wait before using it (0: now).
func (l *sweepState) reserve(provider string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[string]*tokenBucket{}
	}
	b, ok := l.buckets[provider]
	if !ok {
		b = &tokenBucket{tokens: RefreshAheadBurst, last: now}
		l.buckets[provider] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(RefreshAheadBurst), b.tokens+el.Seconds()*RefreshAheadRate)
		b.last = now
	}
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / RefreshAheadRate * float64(time.Second))
}

// refreshDue says why in should be refreshed in the background now, or
// "". lead is how far ahead of the refresh margin refresh_ahead acts.
func refreshDue(in storage.Integration, p *Provider, lastUsed, now time.Time, lead time.Duration) string {
	if in.Status == storage.StatusReauthorizationRequired ||
		(in.Status == storage.StatusDegraded && now.Before(in.NextRefreshAt)) {
		return ""
	}
	cc := in.Grant == GrantClientCredentials
	last := in.LastRefreshAt
	if last.IsZero() || last.Before(in.CreatedAt) {
		last = in.CreatedAt
	}
	if p.RefreshTokenMaxIdle > 0 && !cc && len(in.RefreshToken) > 0 && now.Sub(last) >= p.RefreshTokenMaxIdle {
		return ReasonKeepAlive
	}
	if !p.RefreshAhead || in.ExpiresAt.IsZero() || (!cc && len(in.RefreshToken) == 0) {
		return ""
	}
	lifetime := in.ExpiresAt.Sub(last)
	if lifetime <= 0 {
		lifetime = p.DefaultLifetime
	}
	if lastUsed.IsZero() || now.Sub(lastUsed) > max(refreshAheadUseWindow, 2*lifetime) {
		return ""
	}
	if now.Sub(last) < lifetime/2 {
		return ""
	}
	if !now.Add(p.RefreshMargin + lead).Before(in.ExpiresAt) {
		return ReasonRefreshAhead
	}
	return ""
}

// RefreshAheadResult counts a round's background refreshes.
type RefreshAheadResult struct {
	Refreshed, Failed, Skipped int
	// Deferred: due but past RefreshAheadMaxPerRound.
	Deferred int
}

type refreshCandidate struct {
	tenant, id, provider, reason string
}

// RefreshAheadRound runs one round of background refreshes; every is the
// loop's interval (the lead is twice it).
func (s *Service) RefreshAheadRound(ctx context.Context, every time.Duration) (RefreshAheadResult, error) {
	var res RefreshAheadResult
	ps := *s.providers.Load()
	enabled := false
	for _, p := range ps {
		if p.RefreshAhead || p.RefreshTokenMaxIdle > 0 {
			enabled = true
			break
		}
	}
	if !enabled {
		return res, nil // nothing to do: no store scan
	}
	tenants, err := s.store.ListTenants(ctx)
	if err != nil {
		return res, err
	}
	var cands []refreshCandidate
	for _, t := range tenants {
		if t.Status == storage.TenantDisabled {
			continue
		}
		ins, err := s.store.ListIntegrations(ctx, t.ID)
		if err != nil {
			if errors.Is(err, storage.ErrTenantNotFound) {
				continue
			}
			return res, err
		}
		now := s.now()
		for _, in := range ins {
			p, ok := ps[in.Provider]
			if !ok {
				continue
			}
			if r := refreshDue(in, p, s.lastUsed(in), now, 2*every); r != "" {
				cands = append(cands, refreshCandidate{t.ID, in.ID, in.Provider, r})
			}
		}
	}
	rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	if len(cands) > RefreshAheadMaxPerRound {
		res.Deferred = len(cands) - RefreshAheadMaxPerRound
		cands = cands[:RefreshAheadMaxPerRound]
	}
	for _, c := range cands {
		if wait := s.sweeps.reserve(c.provider, s.now()); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return res, ctx.Err()
			case <-t.C:
			}
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		outcome := "success"
		switch err := s.backgroundRefresh(ctx, c); {
		case errors.Is(err, errNotDue):
			outcome = "skipped"
			res.Skipped++
		case err != nil:
			outcome = "failure"
			res.Failed++
			s.log.WarnContext(ctx, "background refresh failed", "tenant_id", c.tenant, "integration_id", c.id,
				"provider", c.provider, "reason", c.reason, "err", err)
		default:
			res.Refreshed++
		}
		if m := s.lifecycleMetrics(); m != nil {
			m.BackgroundRefresh(c.reason, outcome)
		}
	}
	return res, nil
}

var errNotDue = errors.New("vault: no longer due")

// backgroundRefresh refreshes one candidate under its lock, after deciding
// again on the record read under it.
func (s *Service) backgroundRefresh(ctx context.Context, c refreshCandidate) error {
	p, ok := s.Provider(c.provider)
	if !ok {
		return errNotDue
	}
	t, err := s.tenant(ctx, c.tenant)
	if err != nil || t.Status == storage.TenantDisabled {
		return errNotDue
	}
	ctx = withRefreshReason(ctx, c.reason)
	unlock, err := s.lock(ctx, c.tenant, c.id)
	if err != nil {
		return err
	}
	in, err := s.get(ctx, c.tenant, c.id)
	if err != nil {
		unlock()
		return errNotDue
	}
	// Decide again on the record read under the lock. The round's lead
	// no longer matters: a token a caller refreshed meanwhile is young
	// again, which refreshDue refuses.
	lead := time.Duration(0)
	if c.reason == ReasonRefreshAhead {
		lead = 100 * 365 * 24 * time.Hour
	}
	if refreshDue(in, p, s.lastUsed(in), s.now(), lead) == "" {
		unlock()
		return errNotDue
	}
	l, err := s.refreshDetached(ctx, Caller{Principal: SweepPrincipal}, c.tenant, in, p, unlock)
	if err == nil && l.Integration.Status != storage.StatusActive {
		// A failed refresh of a token still valid answers its lease.
		return errors.New("vault: refresh failed, integration " + l.Integration.Status)
	}
	return err
}
