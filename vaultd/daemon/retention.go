package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vaultd/vaultd/vaultd/audit"
)

// Audit retention ([audit] retention, archive_dir): a loop prunes events
// older than the retention, archiving them first when archive_dir is set
// (audit.Log.Prune). It reads the config on every round, so a SIGHUP
// reload changes it without a restart.
const (
	retentionEvery = 5 * time.Minute
	retentionFirst = time.Minute // the first run, after start-up has settled
	retentionMin   = time.Second
)

// retentionInterval is the wait between runs: every 5 minutes, or half
// the retention when that is shorter (a tiny retention, as in tests),
// but at least a second.
func retentionInterval(retention time.Duration) time.Duration {
	return max(retentionMin, min(retentionEvery, retention/2))
}

type retentionMetrics struct {
	pruned          prometheus.Counter
	archiveFailures prometheus.Counter
}

func newRetentionMetrics(reg prometheus.Registerer) *retentionMetrics {
	m := &retentionMetrics{
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vaultd_audit_pruned_events_total",
			Help: "Audit events pruned from the database by [audit] retention.",
		}),
		archiveFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vaultd_audit_archive_failures_total",
			Help: "Retention runs that could not write or check an archive segment ([audit] archive_dir); nothing past the archive is pruned.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.pruned, m.archiveFailures)
	}
	return m
}

// retentionLoop runs until ctx ends. A failed run is logged and counted
// and retried at the next round; it never stops the daemon.
func (d *daemon) retentionLoop(ctx context.Context, m *retentionMetrics) {
	wait := retentionFirst
	if r := d.cfg.Load().Audit.Retention.Duration(); r > 0 {
		wait = min(wait, retentionInterval(r))
	}
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		ac := d.cfg.Load().Audit
		r := ac.Retention.Duration()
		wait = retentionEvery
		if r <= 0 {
			continue
		}
		wait = retentionInterval(r)
		before, ok := d.capRetention(ctx, time.Now().Add(-r))
		if !ok {
			continue
		}
		res, err := d.audit.Prune(ctx, audit.PruneOptions{Before: before, ArchiveDir: ac.ArchiveDir})
		m.pruned.Add(float64(res.Pruned))
		switch {
		case err == nil:
		case errors.Is(err, audit.ErrArchive):
			m.archiveFailures.Inc()
			d.log.Error("audit retention: archive failed, nothing pruned past the archive", "err", err)
		case ctx.Err() != nil:
			return
		default:
			d.log.Error("audit retention: prune failed", "err", err)
		}
	}
}
