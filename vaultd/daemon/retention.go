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
// and retried at the next round; it never stops the daemon. Each run takes
// the audit-retention lease (lease.go) first: one node of a cluster prunes
// (and archives) the shared trail at a time.
func (d *daemon) retentionLoop(ctx context.Context, m *retentionMetrics) {
	l := d.newLeaser()
	defer l.Close()
	var failing bool
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
		d.leased(ctx, l, leaseRetention, &failing, func() { d.retentionRound(ctx, m, ac.ArchiveDir, r) })
	}
}

// retentionRound prunes (and archives) what is older than r, capped by the
// webhook cursor.
func (d *daemon) retentionRound(ctx context.Context, m *retentionMetrics, archiveDir string, r time.Duration) {
	before, ok := d.capRetention(ctx, time.Now().Add(-r))
	if !ok {
		return
	}
	res, err := d.audit.Prune(ctx, audit.PruneOptions{Before: before, ArchiveDir: archiveDir})
	m.pruned.Add(float64(res.Pruned))
	switch {
	case err == nil:
	case errors.Is(err, audit.ErrArchive):
		m.archiveFailures.Inc()
		d.log.Error("audit retention: archive failed, nothing pruned past the archive", "err", err)
	case ctx.Err() != nil:
	default:
		d.log.Error("audit retention: prune failed", "err", err)
	}
}
