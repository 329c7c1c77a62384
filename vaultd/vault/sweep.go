package vault

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// The lifecycle sweep (every [lifecycle] sweep_interval, daemon's
// lifecycle-sweep loop) looks at every integration once per round:
//
//   - idle_disconnect: an integration unused (last_used_at, or created_at
//     when never used) for idle_disconnect_after is disconnected;
//   - reauth_purge: one in reauthorization_required for
//     reauth_purge_after (since updated_at) is disconnected the same way;
//   - health: its score is computed; one that became flagged since the
//     last round is recorded as integration.flagged ("score=NN"), which the
//     notification dispatcher turns into integration.flagged.
//
// A disconnect goes through Disconnect (revocation at the provider, and
// whatever happens to a revocation that fails), by the principal "vaultd",
// preceded by an integration.sweep event whose detail starts with the
// reason. Disabled tenants are counted but left alone. A round takes at
// most SweepMaxActions actions (disconnects and flag events); the rest
// wait for the next round.
//
// Which integrations were flagged at the last round is kept in memory
// only: after a restart, an integration still flagged is recorded (and
// notified) once more, in keeping with at-least-once notifications.

// SweepPrincipal is the actor of the events vaultd's own background work
// records (sweeps, refresh-ahead, keep-alive).
const SweepPrincipal = "vaultd"

// SweepMaxActions bounds the actions of one sweep round.
const SweepMaxActions = 100

// Sweep reasons: integration.sweep details start with them.
const (
	SweepIdleDisconnect = "idle_disconnect"
	SweepReauthPurge    = "reauth_purge"
)

// LifecycleMetrics is the optional part of Metrics the lifecycle work
// reports to (found by type assertion).
type LifecycleMetrics interface {
	// Integrations reports a sweep's census: integrations by status and
	// how many are flagged.
	Integrations(byStatus map[string]int, flagged int)
	// SweepAction counts a sweep action (idle_disconnect, reauth_purge,
	// flagged).
	SweepAction(action string)
	// BackgroundRefresh counts a background refresh by reason
	// (refresh_ahead, keep_alive) and outcome (success, failure, skipped).
	BackgroundRefresh(reason, outcome string)
}

// sweepState is the service's lifecycle state (Service.life).
type sweepState struct {
	settings func() SweepSettings
	mu       sync.Mutex
	flagged  map[[2]string]bool // flagged at the last sweep
	buckets  map[string]*tokenBucket
}

func (l *sweepState) wasFlagged(k [2]string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flagged[k]
}

func (l *sweepState) setFlagged(m map[[2]string]bool) {
	l.mu.Lock()
	l.flagged = m
	l.mu.Unlock()
}

// SweepResult says what a round saw and did.
type SweepResult struct {
	ByStatus     map[string]int
	Flagged      int
	Disconnected int // idle_disconnect
	Purged       int // reauth_purge
	NewlyFlagged int
	// Deferred counts actions left for the next round (SweepMaxActions).
	Deferred int
}

func (s *Service) lifecycleMetrics() LifecycleMetrics {
	if m, ok := s.metrics.(LifecycleMetrics); ok {
		return m
	}
	return nil
}

// Sweep runs one round of the lifecycle sweep.
func (s *Service) Sweep(ctx context.Context) (SweepResult, error) {
	cfg := s.sweepSettings()
	res := SweepResult{ByStatus: map[string]int{
		storage.StatusActive: 0, storage.StatusDegraded: 0, storage.StatusReauthorizationRequired: 0,
	}}
	tenants, err := s.store.ListTenants(ctx)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	pending, err := s.pendingRevocations(ctx)
	if err != nil {
		return res, err
	}
	budget := SweepMaxActions
	flags := map[[2]string]bool{}
	for _, t := range tenants {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		ins, err := s.store.ListIntegrations(ctx, t.ID)
		if err != nil {
			if errors.Is(err, storage.ErrTenantNotFound) {
				continue // offboarded meanwhile
			}
			return res, s.storeErr(err)
		}
		disabled := t.Status == storage.TenantDisabled
		for _, in := range ins {
			res.ByStatus[in.Status]++
			if disabled {
				continue
			}
			now := s.now()
			key := [2]string{t.ID, in.ID}
			reason, _ := sweepDue(in, s.lastUsed(in), cfg, now)
			if reason != "" {
				if budget == 0 {
					res.Deferred++
				} else {
					budget--
					if err := s.sweepDisconnect(ctx, t.ID, in.ID, reason); err != nil {
						s.log.WarnContext(ctx, "sweep: disconnect failed", "tenant_id", t.ID, "integration_id", in.ID, "reason", reason, "err", err)
					} else {
						if reason == SweepIdleDisconnect {
							res.Disconnected++
						} else {
							res.Purged++
						}
						if m := s.lifecycleMetrics(); m != nil {
							m.SweepAction(reason)
						}
						continue
					}
				}
			}
			h := s.scoreOf(t, in, pending, cfg, now)
			if !h.Flagged {
				continue
			}
			res.Flagged++
			if s.sweeps.wasFlagged(key) {
				flags[key] = true
				continue
			}
			if budget == 0 {
				res.Deferred++ // not remembered: recorded next round
				continue
			}
			budget--
			ev := audit.Event{TenantID: t.ID, IntegrationID: in.ID, Actor: SweepPrincipal, Action: audit.ActionIntegrationFlagged,
				Outcome: audit.OutcomeSuccess, Detail: fmt.Sprintf("score=%d", h.Score)}
			if _, err := s.audit.Record(ctx, ev); err != nil {
				s.log.WarnContext(ctx, "sweep: flag event not recorded", "tenant_id", t.ID, "integration_id", in.ID, "err", err)
				continue
			}
			flags[key] = true
			res.NewlyFlagged++
			if m := s.lifecycleMetrics(); m != nil {
				m.SweepAction("flagged")
			}
		}
	}
	s.sweeps.setFlagged(flags)
	if m := s.lifecycleMetrics(); m != nil {
		m.Integrations(res.ByStatus, res.Flagged)
	}
	return res, nil
}

// sweepDue says whether in is due for a sweep disconnect, why and in
// which words.
func sweepDue(in storage.Integration, lastUsed time.Time, cfg SweepSettings, now time.Time) (reason, detail string) {
	if d := cfg.IdleDisconnectAfter; d > 0 {
		// Idle since the last use, or since the token was last stored (a
		// re-store or reconnect starts the clock again), or since creation.
		since, what := lastUsed, "last_used"
		if in.StoredAt.After(since) {
			since, what = in.StoredAt, "last stored"
		}
		if since.IsZero() {
			since, what = in.CreatedAt, "never used, created"
		}
		if !since.IsZero() && now.Sub(since) >= d {
			return SweepIdleDisconnect, fmt.Sprintf("%s %s: %s ago, idle_disconnect_after %s", SweepIdleDisconnect, what, ago(now.Sub(since)), ago(d))
		}
	}
	if d := cfg.ReauthPurgeAfter; d > 0 && in.Status == storage.StatusReauthorizationRequired && !in.UpdatedAt.IsZero() && now.Sub(in.UpdatedAt) >= d {
		return SweepReauthPurge, fmt.Sprintf("%s: reauthorization_required for %s, reauth_purge_after %s", SweepReauthPurge, ago(now.Sub(in.UpdatedAt)), ago(d))
	}
	return "", ""
}

// sweepDisconnect records the integration.sweep event, then disconnects
// through Disconnect. The record is read again first: an integration used
// or reauthorized since the round read it is left alone.
func (s *Service) sweepDisconnect(ctx context.Context, tenantID, id, reason string) error {
	c := Caller{Principal: SweepPrincipal}
	// Decided again under the integration's lock, on the record as it is
	// then: a reconnect or a use racing the sweep wins.
	_, err := s.disconnectIf(ctx, c, tenantID, id, func(in storage.Integration) error {
		r, d := sweepDue(in, s.lastUsed(in), s.sweepSettings(), s.now())
		if r != reason {
			return fmt.Errorf("no longer due for %s", reason)
		}
		if _, err := s.audit.Record(ctx, c.event(audit.ActionIntegrationSweep, tenantID, id, audit.OutcomeSuccess, d)); err != nil {
			return fmt.Errorf("%w: audit: %w", ErrUnavailable, err)
		}
		return nil
	})
	return err
}
