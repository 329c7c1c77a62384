package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vaultd/vaultd/storage"
)

// lifecycleMetrics are the lifecycle sweep's and background refreshes'
// metrics (vault.LifecycleMetrics). Labels are fixed words: statuses,
// reasons, outcomes, actions; never a tenant or integration id.
type lifecycleMetrics struct {
	integrations *prometheus.GaugeVec
	flagged      prometheus.Gauge
	actions      *prometheus.CounterVec
	background   *prometheus.CounterVec
}

func newLifecycleMetrics(reg prometheus.Registerer) *lifecycleMetrics {
	m := &lifecycleMetrics{
		integrations: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vaultd_integrations", Help: "Integrations by status, as counted by the last lifecycle sweep.",
		}, []string{"status"}),
		flagged: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vaultd_integrations_flagged", Help: "Integrations whose health score is below [lifecycle] score_threshold, at the last lifecycle sweep.",
		}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vaultd_lifecycle_sweep_actions_total", Help: "Lifecycle sweep actions: idle_disconnect, reauth_purge, flagged.",
		}, []string{"action"}),
		background: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vaultd_background_refresh_total", Help: "Background token refreshes by reason (refresh_ahead, keep_alive) and outcome (success, failure, skipped).",
		}, []string{"reason", "outcome"}),
	}
	for _, st := range []string{storage.StatusActive, storage.StatusDegraded, storage.StatusReauthorizationRequired} {
		m.integrations.WithLabelValues(st) // export zeros before the first sweep
	}
	for _, a := range []string{"idle_disconnect", "reauth_purge", "flagged"} {
		m.actions.WithLabelValues(a)
	}
	for _, r := range []string{"refresh_ahead", "keep_alive"} {
		for _, o := range []string{"success", "failure", "skipped"} {
			m.background.WithLabelValues(r, o)
		}
	}
	reg.MustRegister(m.integrations, m.flagged, m.actions, m.background)
	return m
}

// Integrations implements vault.LifecycleMetrics.
func (m *Metrics) Integrations(byStatus map[string]int, flagged int) {
	for st, n := range byStatus {
		m.lifecycle.integrations.WithLabelValues(st).Set(float64(n))
	}
	m.lifecycle.flagged.Set(float64(flagged))
}

// SweepAction implements vault.LifecycleMetrics.
func (m *Metrics) SweepAction(action string) { m.lifecycle.actions.WithLabelValues(action).Inc() }

// BackgroundRefresh implements vault.LifecycleMetrics.
func (m *Metrics) BackgroundRefresh(reason, outcome string) {
	m.lifecycle.background.WithLabelValues(reason, outcome).Inc()
}
