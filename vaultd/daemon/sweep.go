package daemon

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/vaultd/vaultd/vaultd/config"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// The lifecycle sweep and the background refreshes (vault/sweep.go,
// vault/refreshahead.go) run as two loops. Both read the live config on
// every round, so a SIGHUP reload changes them without a restart. Each
// round runs under its lease (lease.go): on one node of a cluster.

// sweepSettings maps [lifecycle] to what the service's sweep and health
// scores read.
func sweepSettings(cfg *config.Config) vault.SweepSettings {
	l := cfg.Lifecycle
	return vault.SweepSettings{
		IdleDisconnectAfter: l.IdleDisconnectAfter.Duration(),
		ReauthPurgeAfter:    l.ReauthPurgeAfter.Duration(),
		ScoreThreshold:      l.ScoreThreshold,
	}
}

// jitter spreads d by up to ±10%, so rounds do not line up with other
// periodic work (or with other vaultd instances' rounds).
func jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}

// lifecycleSweep runs vault.Sweep every [lifecycle] sweep_interval. A
// failed round is logged and retried at the next one.
func (d *daemon) lifecycleSweep(ctx context.Context) {
	l := d.newLeaser()
	defer l.Close()
	var failing bool
	for {
		t := time.NewTimer(jitter(d.cfg.Load().Lifecycle.SweepInterval.Duration()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		d.leased(ctx, l, leaseSweep, &failing, func() {
			res, err := d.svc.Sweep(ctx)
			if err != nil {
				if ctx.Err() == nil {
					d.log.Warn("lifecycle sweep failed", "err", err)
				}
				return
			}
			if res.Disconnected+res.Purged+res.NewlyFlagged+res.Deferred > 0 {
				d.log.Info("lifecycle sweep", "idle_disconnected", res.Disconnected, "reauth_purged", res.Purged,
					"newly_flagged", res.NewlyFlagged, "flagged", res.Flagged, "deferred", res.Deferred)
			}
		})
	}
}

// refreshAhead runs vault.RefreshAheadRound every
// vault.RefreshAheadInterval (jittered); a round over many due
// integrations takes as long as the per-provider rate needs.
func (d *daemon) refreshAhead(ctx context.Context) {
	l := d.newLeaser()
	defer l.Close()
	var failing bool
	for {
		t := time.NewTimer(jitter(vault.RefreshAheadInterval))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		d.leased(ctx, l, leaseRefreshAhead, &failing, func() {
			res, err := d.svc.RefreshAheadRound(ctx, vault.RefreshAheadInterval)
			if err != nil {
				if ctx.Err() == nil {
					d.log.Warn("background refresh round failed", "err", err)
				}
				return
			}
			if res.Refreshed+res.Failed+res.Deferred > 0 {
				d.log.Info("background refreshes", "refreshed", res.Refreshed, "failed", res.Failed, "skipped", res.Skipped, "deferred", res.Deferred)
			}
		})
	}
}
