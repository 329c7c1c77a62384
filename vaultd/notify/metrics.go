package notify

import "github.com/prometheus/client_golang/prometheus"

// Delivery outcomes, the values of vaultd_webhook_deliveries_total's
// outcome label.
const (
	OutcomeDelivered  = "delivered"
	OutcomeRetry      = "retry"
	OutcomeDeadLetter = "dead_letter"
)

// metrics have bounded labels only: an outcome word, never a webhook URL,
// a tenant or a delivery id.
type metrics struct {
	deliveries  *prometheus.CounterVec
	deadLetters prometheus.Counter
	pending     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vaultd_webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome: delivered (2xx), retry (failed, another attempt scheduled), dead_letter (the last attempt failed).",
		}, []string{"outcome"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vaultd_webhook_dead_letters_total",
			Help: "Webhook deliveries dead-lettered (status failed) after their last attempt, or because their webhook is no longer configured.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vaultd_webhook_pending",
			Help: "Webhook deliveries waiting to be delivered (status pending).",
		}),
	}
	for _, o := range []string{OutcomeDelivered, OutcomeRetry, OutcomeDeadLetter} {
		m.deliveries.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.deadLetters, m.pending)
	}
	return m
}
