package vault

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// Lease is a usable access token for one outbound call. Wipe it after use.
type Lease struct {
	Token       secret.String
	TokenType   string
	Provider    *Provider
	Integration storage.Integration
	// Revision of the record the token came from.
	Revision uint64
}

// AccessToken returns a usable access token for (tenant, integration),
// refreshing it first if it expires within the provider's refresh margin.
func (s *Service) AccessToken(ctx context.Context, c Caller, tenantID, id string) (Lease, error) {
	return s.accessToken(ctx, c, tenantID, id, nil)
}

// ForceRefresh is called after the upstream rejected rejected's token (a
// 401) that the vault considered valid. It refreshes at most once per
// access token and once per provider ForcedRefreshInterval: when the
// stored token is no longer the rejected one, it returns a lease for the
// newer token without a refresh; when the integration was refreshed within
// the interval, or refreshes are backing off after a failure, it returns
// ErrRefreshThrottled and the caller passes the 401 on.
func (s *Service) ForceRefresh(ctx context.Context, c Caller, tenantID, id string, rejected Lease) (Lease, error) {
	if rejected.Token.IsZero() {
		return Lease{}, fmt.Errorf("%w: no rejected token given", ErrRefreshThrottled)
	}
	return s.accessToken(ctx, c, tenantID, id, &rejected.Token)
}

// accessToken serves AccessToken (rejected nil) and ForceRefresh.
func (s *Service) accessToken(ctx context.Context, c Caller, tenantID, id string, rejected *secret.String) (Lease, error) {
	in, err := s.get(ctx, tenantID, id)
	if err != nil {
		return Lease{}, err
	}
	return s.accessTokenFrom(ctx, c, tenantID, in, rejected)
}

// Ref is an integration read once for one outbound call: the edge learns
// its provider from it (for the egress check) and AccessTokenFrom then
// uses the same record on the fast path, so a proxied call reads the
// integration once, not twice. It holds sealed tokens only.
type Ref struct {
	tenant   string
	in       storage.Integration
	Provider string
	// APIBase is the integration's egress boundary: its own API base when
	// one was fixed at store time, else the provider's; nil when neither
	// is usable (the call is refused).
	APIBase *url.URL
}

// Lookup reads an integration for an outbound call (ErrNotFound for a
// missing or foreign one, as GetIntegration).
func (s *Service) Lookup(ctx context.Context, tenantID, id string) (Ref, error) {
	in, err := s.get(ctx, tenantID, id)
	if err != nil {
		return Ref{}, err
	}
	ref := Ref{tenant: tenantID, in: in, Provider: in.Provider}
	if in.APIBaseURL != "" {
		// Written by this service after validation; a record that no
		// longer parses is refused, never replaced by the provider's.
		if u, err := url.Parse(in.APIBaseURL); err == nil && u.Scheme != "" && u.Host != "" {
			ref.APIBase = u
		}
	} else if p, ok := s.Provider(in.Provider); ok {
		ref.APIBase = p.APIBase
	}
	return ref, nil
}

// AccessTokenFrom is AccessToken for an integration already read by
// Lookup: its record decides the fast path; a due refresh re-reads under
// the lock as always.
func (s *Service) AccessTokenFrom(ctx context.Context, c Caller, ref Ref) (Lease, error) {
	if ref.tenant == "" {
		return Lease{}, ErrNotFound
	}
	return s.accessTokenFrom(ctx, c, ref.tenant, ref.in, nil)
}

// accessTokenFrom continues accessToken from the record in.
func (s *Service) accessTokenFrom(ctx context.Context, c Caller, tenantID string, in storage.Integration, rejected *secret.String) (Lease, error) {
	p, ok := s.Provider(in.Provider)
	if !ok {
		// The provider was removed from the config: the integration cannot
		// be used or refreshed until it is configured again.
		return Lease{}, fmt.Errorf("%w: provider not configured", ErrUnavailable)
	}
	if in.Status == storage.StatusReauthorizationRequired {
		return Lease{}, ErrReauthorizationRequired
	}
	now := s.now()
	if rejected == nil && !s.needsRefresh(in, p, now) {
		return s.lease(ctx, tenantID, in, p)
	}
	if rejected == nil {
		return s.sharedRefresh(ctx, c, tenantID, in, p)
	}
	return s.lockedAccess(ctx, c, tenantID, in, p, rejected)
}

// refreshFlight is one caller's pass through the locked path of an
// integration whose token is due, shared with the callers that arrive
// while it runs.
type refreshFlight struct {
	done  chan struct{}
	lease Lease
	err   error
	// gaveUp: the leading caller stopped waiting (its context ended);
	// its error is its own, not the followers'.
	gaveUp bool
}

// sharedRefresh runs the locked path once for every caller that finds the
// same integration due at the same time: the first leads, the others wait
// for its result instead of queueing on the lock and re-reading the record
// one by one (a storm of 1,000 callers then costs one refresh and one
// re-read, not 1,000 sequential re-reads). Exactly-one holds as before:
// only the leader takes the lock.
func (s *Service) sharedRefresh(ctx context.Context, c Caller, tenantID string, in storage.Integration, p *Provider) (Lease, error) {
	key := tenantID + "\x00" + in.ID
	s.flightMu.Lock()
	if f, ok := s.flights[key]; ok {
		s.flightMu.Unlock()
		if s.onFlightJoin != nil {
			s.onFlightJoin()
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return Lease{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
		if f.gaveUp {
			// The leader's hang-up (or failure to finish) is not ours:
			// take the locked path (which finds the refresh the leader
			// started, committed).
			return s.lockedAccess(ctx, c, tenantID, in, p, nil)
		}
		return f.lease.clone(), f.err
	}
	f := &refreshFlight{done: make(chan struct{}), gaveUp: true}
	if s.flights == nil {
		s.flights = map[string]*refreshFlight{}
	}
	s.flights[key] = f
	s.flightMu.Unlock()
	// Released whatever happens, a panic included: a flight left behind
	// would hold every later caller of this integration.
	defer func() {
		s.flightMu.Lock()
		delete(s.flights, key)
		s.flightMu.Unlock()
		close(f.done)
	}()
	lease, err := s.lockedAccess(ctx, c, tenantID, in, p, nil)
	f.lease, f.err, f.gaveUp = lease, err, err != nil && ctx.Err() != nil
	return lease, err
}

// clone copies the parts of a lease a caller could edit, so callers that
// shared one refresh share no slices.
func (l Lease) clone() Lease {
	l.Integration.Scopes = append([]string(nil), l.Integration.Scopes...)
	l.Integration.AccessToken = append([]byte(nil), l.Integration.AccessToken...)
	l.Integration.RefreshToken = append([]byte(nil), l.Integration.RefreshToken...)
	l.Integration.Client = append([]byte(nil), l.Integration.Client...)
	return l
}

// lockedAccess is accessTokenFrom's slow path: under the integration's
// lock, re-read, decide again, and refresh when still due (or when the
// upstream rejected the token).
func (s *Service) lockedAccess(ctx context.Context, c Caller, tenantID string, in storage.Integration, p *Provider, rejected *secret.String) (Lease, error) {
	id := in.ID
	seenToken := in.AccessToken

	unlock, err := s.lock(ctx, tenantID, id)
	if err != nil {
		return Lease{}, err
	}
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	// Re-read under the lock: a caller before us may have refreshed.
	in, err = s.get(ctx, tenantID, id)
	if err != nil {
		return Lease{}, err
	}
	if in.Status == storage.StatusReauthorizationRequired {
		return Lease{}, ErrReauthorizationRequired
	}
	now := s.now()
	if rejected != nil {
		cur, err := s.lease(ctx, tenantID, in, p)
		if err != nil {
			return Lease{}, err
		}
		if !cur.Token.Equal(*rejected) {
			// Replaced (refreshed or re-stored) since the call that got
			// the 401: try the newer token, no refresh. Comparing the token
			// itself, not the revision, since last_used_at flushes also
			// bump the revision.
			return cur, nil
		}
		if last := in.LastRefreshAt; !last.IsZero() && now.Sub(last) < p.forcedRefreshInterval() {
			s.metrics.Refresh(p.Name, "forced_throttled")
			return Lease{}, fmt.Errorf("%w: refreshed %s ago", ErrRefreshThrottled, now.Sub(last).Round(time.Second))
		}
		if in.Status == storage.StatusDegraded && now.Before(in.NextRefreshAt) {
			s.metrics.Refresh(p.Name, "forced_throttled")
			return Lease{}, fmt.Errorf("%w: refresh backing off after failure", ErrRefreshThrottled)
		}
	} else {
		// A token replaced while we queued (refreshed or re-stored) and
		// still valid is used as is, even inside the refresh margin: when
		// the margin exceeds the provider's token lifetime every fresh
		// token is "due", and each waiter refreshing again would turn one
		// refresh into a storm.
		replaced := !bytes.Equal(in.AccessToken, seenToken) && in.Status == storage.StatusActive &&
			!in.ExpiresAt.IsZero() && now.Before(in.ExpiresAt)
		if replaced || !s.needsRefresh(in, p, now) {
			// Someone refreshed while we waited. Release before opening
			// the token (a tenant read and a decryption, as on the
			// lock-free fast path): in a storm every waiter passes through
			// here one by one, so the critical section is only the re-read.
			unlock()
			locked = false
			return s.lease(ctx, tenantID, in, p)
		}
		if in.Status == storage.StatusDegraded && now.Before(in.NextRefreshAt) {
			// Backing off after a transient failure: keep using the old
			// token while it is valid; refuse once it has expired.
			if now.Before(in.ExpiresAt) {
				return s.lease(ctx, tenantID, in, p)
			}
			return Lease{}, fmt.Errorf("%w: refresh backing off after failure", ErrUnavailable)
		}
	}
	locked = false // the refresh owns the lock now
	return s.refreshDetached(ctx, c, tenantID, in, p, unlock)
}

// refreshDetached runs the refresh with the integration's lock held (unlock
// releases it when the refresh has committed) on a context detached from
// the caller's and bounded by the provider's refreshBudget. The caller may
// stop waiting, but a refresh once started always runs to its commit: a
// provider that rotated the refresh token while the caller hung up must
// not leave the vault holding the dead one.
func (s *Service) refreshDetached(ctx context.Context, c Caller, tenantID string, in storage.Integration, p *Provider, unlock func()) (Lease, error) {
	type result struct {
		l   Lease
		err error
	}
	done := make(chan result, 1) // buffered: the refresh never waits for an absent caller
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.refreshBudget())
	started := s.goBackground(func() {
		defer cancel()
		defer unlock()
		l, err := s.refreshLocked(rctx, c, tenantID, in, p)
		done <- result{l, err}
	})
	if !started {
		cancel()
		unlock()
		return Lease{}, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	select {
	case r := <-done:
		return r.l, r.err
	case <-ctx.Done():
		return Lease{}, fmt.Errorf("vault: caller stopped waiting for the refresh, which goes on: %w", ctx.Err())
	}
}

func (s *Service) needsRefresh(in storage.Integration, p *Provider, now time.Time) bool {
	if in.ExpiresAt.IsZero() {
		return false // no expiry known: the token is used until the upstream says 401
	}
	return !now.Add(p.RefreshMargin).Before(in.ExpiresAt)
}

// refreshLocked runs with the integration's lock held.
func (s *Service) refreshLocked(ctx context.Context, c Caller, tenantID string, in storage.Integration, p *Provider) (Lease, error) {
	t, err := s.tenant(ctx, tenantID)
	if err != nil {
		return Lease{}, err
	}
	// Its own client and parameters, if it has them: the token endpoint and
	// the client that got the token are the ones that may renew it.
	if p, err = s.forIntegration(ctx, t, in, p); err != nil {
		return Lease{}, err
	}
	if in.Grant == GrantClientCredentials {
		return s.renewClientCredentials(ctx, c, tenantID, t, in, p)
	}
	now := s.now()
	stillValid := !in.ExpiresAt.IsZero() && now.Before(in.ExpiresAt)
	if len(in.RefreshToken) == 0 {
		if stillValid {
			return s.lease(ctx, tenantID, in, p)
		}
		return Lease{}, s.markReauth(ctx, c, tenantID, in, p, "no refresh token")
	}
	rt, err := s.keys.OpenField(ctx, t, in.ID, fieldRefresh, in.RefreshToken)
	if err != nil {
		return Lease{}, fmt.Errorf("%w: open refresh token: %w", ErrUnavailable, err)
	}
	oldRefresh := secret.NewString(string(rt.Reveal()))
	rt.Wipe()
	// The DEK the new tokens will be sealed with is held from before the
	// provider call: after it, sealing needs no HSM.
	sealer, err := s.keys.HoldCurrentDEK(ctx, t)
	if err != nil {
		return Lease{}, fmt.Errorf("%w: data key: %w", ErrUnavailable, err)
	}
	defer sealer.Release()

	tok, rerr := s.refresh(ctx, p.Endpoint, oldRefresh)
	if rerr == nil && (tok.AccessToken.Len() > MaxTokenBytes || tok.RefreshToken.Len() > MaxTokenBytes) {
		rerr = errTokenTooLarge
	}
	// From here on the provider's answer must be recorded whatever the
	// caller does (see commitTimeout).
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if rerr != nil {
		if oauth.IsInvalidGrant(rerr) {
			s.metrics.Refresh(p.Name, "invalid_grant")
			return Lease{}, s.markReauth(cctx, c, tenantID, in, p, safeReason(rerr))
		}
		s.metrics.Refresh(p.Name, "transient")
		return s.markDegraded(cctx, c, tenantID, in, p, rerr, stillValid)
	}
	s.metrics.Refresh(p.Name, "success")

	newRefresh := tok.RefreshToken
	if newRefresh.IsZero() {
		newRefresh = oldRefresh // RFC 6749 §6: the provider may keep the old one
	}
	granted := normScopes(tok.Scope)
	drift := oauth.ScopeDrift(granted, in.Scopes, p.Scopes)
	upd := in
	if len(granted) > 0 {
		upd.Scopes = granted
	}
	now = s.now().UTC()
	upd.ExpiresAt = expiry(now, tok.ExpiresIn, p.DefaultLifetime)
	upd.TokenType = tokenType(tok.TokenType)
	upd.Status = storage.StatusActive
	upd.ConsecutiveFailures = 0
	upd.LastError = ""
	upd.NextRefreshAt = time.Time{}
	upd.LastRefreshAt = now
	upd.UpdatedAt = now
	upd.RefreshCount++
	if err := sealTokensWith(&upd, tok.AccessToken, newRefresh, func(field string, pt []byte) ([]byte, error) {
		return sealer.Seal(in.ID, field, pt)
	}); err != nil {
		return Lease{}, err
	}
	var notes []string
	if in.Status == storage.StatusDegraded {
		// Failing refreshes are over: notifications say "recovered".
		notes = append(notes, "recovered")
	}
	if len(drift) > 0 {
		notes = append(notes, "scope drift")
	}
	detail := backgroundDetail(ctx, strings.Join(notes, "; "))
	evs := []audit.Event{tokenURLEvent(c, p, audit.ActionTokenRefresh, tenantID, in.ID, audit.OutcomeSuccess, detail)}
	if len(drift) > 0 {
		evs = append(evs, tokenURLEvent(c, p, audit.ActionScopeDrift, tenantID, in.ID, audit.OutcomeSuccess, "unexpected scopes: "+joinScopes(drift)))
	}
	// The new tokens, their token.refresh event and any scope.drift event
	// commit together. On failure the record keeps the old refresh token;
	// if the provider rotated it, the next refresh tells (invalid_grant ->
	// reauthorization_required): fail closed, never a silent bypass.
	out, err := s.casAudited(cctx, tenantID, upd, evs...)
	if err != nil {
		return Lease{}, err
	}
	if len(drift) > 0 {
		s.metrics.ScopeDrift(p.Name)
		s.log.WarnContext(ctx, "scope drift on refresh", "tenant_id", tenantID, "integration_id", in.ID, "provider", p.Name, "extra_scopes", drift)
	}
	return Lease{Token: tok.AccessToken, TokenType: out.TokenType, Provider: p, Integration: out, Revision: out.Revision}, nil
}

// tokenURLEvent is an audit event of c's request about a call to p's
// token endpoint.
func tokenURLEvent(c Caller, p *Provider, action, tenantID, id, outcome, detail string) audit.Event {
	ev := c.event(action, tenantID, id, outcome, detail)
	ev.TargetHost = hostOf(p.Endpoint.TokenURL)
	return ev
}

func (s *Service) markReauth(ctx context.Context, c Caller, tenantID string, in storage.Integration, p *Provider, reason string) error {
	upd := in
	upd.Status = storage.StatusReauthorizationRequired
	upd.ConsecutiveFailures++
	upd.LastError = reason
	upd.UpdatedAt = s.now().UTC()
	if _, err := s.casAudited(ctx, tenantID, upd,
		tokenURLEvent(c, p, audit.ActionTokenRefresh, tenantID, in.ID, audit.OutcomeFailure, backgroundDetail(ctx, "reauthorization_required: "+reason))); err != nil {
		return err
	}
	s.log.WarnContext(ctx, "integration needs reauthorization", "tenant_id", tenantID, "integration_id", in.ID, "provider", p.Name, "reason", reason)
	return ErrReauthorizationRequired
}

// backoff after n consecutive transient failures: 2s, 4s, ... capped at 5m.
func backoff(n uint32) time.Duration {
	d := 2 * time.Second
	for i := uint32(1); i < n && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

func (s *Service) markDegraded(ctx context.Context, c Caller, tenantID string, in storage.Integration, p *Provider, cause error, stillValid bool) (Lease, error) {
	reason := safeReason(cause)
	upd := in
	upd.Status = storage.StatusDegraded
	upd.ConsecutiveFailures++
	upd.LastError = reason
	now := s.now().UTC()
	upd.UpdatedAt = now
	upd.NextRefreshAt = now.Add(backoff(upd.ConsecutiveFailures))
	out, err := s.casAudited(ctx, tenantID, upd,
		tokenURLEvent(c, p, audit.ActionTokenRefresh, tenantID, in.ID, audit.OutcomeFailure, backgroundDetail(ctx, "degraded: "+reason)))
	if err != nil {
		return Lease{}, err
	}
	s.log.WarnContext(ctx, "token refresh failed", "tenant_id", tenantID, "integration_id", in.ID, "provider", p.Name, "reason", reason, "consecutive_failures", upd.ConsecutiveFailures)
	if stillValid {
		return s.lease(ctx, tenantID, out, p)
	}
	return Lease{}, fmt.Errorf("%w: refresh failed: %s", ErrUnavailable, reason)
}

func (s *Service) lease(ctx context.Context, tenantID string, in storage.Integration, p *Provider) (Lease, error) {
	t, err := s.tenant(ctx, tenantID)
	if err != nil {
		return Lease{}, err
	}
	b, err := s.keys.OpenField(ctx, t, in.ID, fieldAccess, in.AccessToken)
	if err != nil {
		return Lease{}, fmt.Errorf("%w: open access token: %w", ErrUnavailable, err)
	}
	tok := secret.NewString(string(b.Reveal()))
	b.Wipe()
	return Lease{Token: tok, TokenType: in.TokenType, Provider: p, Integration: in, Revision: in.Revision}, nil
}

// MarkUsed records a successful use for last_used_at (flushed in the
// background so the hot path does not write to the store).
func (s *Service) MarkUsed(tenantID, id string) { s.usage.mark(tenantID, id, s.now().UTC()) }
