package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vaultd/vaultd/vaultd/api"
)

// Metrics are vaultd's Prometheus metrics, on a registry of their own (no
// global default registry). Labels carry routes, codes and provider names
// only: never a tenant-supplied string, a token or an id.
type Metrics struct {
	Registry      *prometheus.Registry
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	refresh       *prometheus.CounterVec
	scopeDrift    *prometheus.CounterVec
	lockWait      prometheus.Histogram
	authDenied    prometheus.Counter
	forcedRefresh prometheus.Counter
	// forcedRefreshThrottled counts upstream 401s passed on without a
	// refresh (ForceRefresh declined).
	forcedRefreshThrottled prometheus.Counter
	reloads                *prometheus.CounterVec
	// connect counts browser-side connect steps by step and result
	// (fixed words: never a session id or provider text).
	connect *prometheus.CounterVec
	// lifecycle: integrations by status and flagged, sweep actions,
	// background refreshes (lifecyclemetrics.go).
	lifecycle *lifecycleMetrics

	// revocationsPending is the revocation queue's length (tenantlife.go).
	revocationsPending prometheus.Gauge
}

// NewMetrics registers the metrics on reg (a new registry if nil).
func NewMetrics(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vaultd_http_requests_total", Help: "API requests by route and status.",
		}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vaultd_http_request_duration_seconds", Help: "API request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		refresh: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vaultd_token_refresh_total", Help: "Token refresh attempts by provider and outcome.",
		}, []string{"provider", "outcome"}),
		scopeDrift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vaultd_scope_drift_total", Help: "Refreshes that granted scopes beyond the stored grant or inventory.",
		}, []string{"provider"}),
		lockWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vaultd_integration_lock_wait_seconds", Help: "Time spent waiting for a per-integration lock.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		authDenied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vaultd_auth_denied_total", Help: "Requests refused by authentication or policy.",
		}),
		forcedRefresh: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vaultd_forced_refresh_total", Help: "Refreshes forced by an upstream 401 on a token considered valid.",
		}),
		forcedRefreshThrottled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vaultd_forced_refresh_throttled_total", Help: "Upstream 401s answered as they came because a forced refresh was throttled.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vaultd_config_reloads_total", Help: "SIGHUP reloads by outcome.",
		}, []string{"outcome"}),
		connect: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vaultd_connect_requests_total", Help: "Connect listener requests by step (link, callback, other) and result.",
		}, []string{"step", "result"}),
	}
	reg.MustRegister(m.requests, m.duration, m.refresh, m.scopeDrift, m.lockWait, m.authDenied, m.forcedRefresh, m.forcedRefreshThrottled, m.reloads, m.connect,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.lifecycle = newLifecycleMetrics(reg)
	m.revocationsPending = newRevocationsPending(reg)
	return m
}

func (m *Metrics) observeRequest(route string, status int, d time.Duration) {
	if status == 0 {
		status = http.StatusOK
	}
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

// Refresh implements vault.Metrics.
func (m *Metrics) Refresh(provider, outcome string) {
	m.refresh.WithLabelValues(provider, outcome).Inc()
}

// ScopeDrift implements vault.Metrics.
func (m *Metrics) ScopeDrift(provider string) { m.scopeDrift.WithLabelValues(provider).Inc() }

// LockWait implements vault.Metrics.
func (m *Metrics) LockWait(d time.Duration) { m.lockWait.Observe(d.Seconds()) }

// Reload counts a SIGHUP reload.
func (m *Metrics) Reload(ok bool) {
	if ok {
		m.reloads.WithLabelValues("success").Inc()
	} else {
		m.reloads.WithLabelValues("failure").Inc()
	}
}

// opsRoute is one route of the ops listener.
type opsRoute struct {
	method, path string
	handler      http.Handler
}

// opsRoutes are the ops listener's routes (plain HTTP, loopback, no
// client certificate). docs/openapi.json documents them
// (TestOpenAPIMatchesRoutes).
func (s *Server) opsRoutes() []opsRoute {
	return []opsRoute{
		{http.MethodGet, "/healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		})},
		{http.MethodGet, "/readyz", http.HandlerFunc(s.readyz)},
		{http.MethodGet, "/metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{})},
	}
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not_ready", "reason": "shutting down"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if s.ready != nil {
		if err := s.ready(ctx); err != nil {
			// err names the failing component ("hsm: unavailable");
			// neither it nor its causes carry secrets.
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not_ready", "reason": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// OpsHandler serves /healthz, /readyz and /metrics (plain HTTP, loopback).
func (s *Server) OpsHandler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.opsRoutes() {
		mux.Handle(rt.method+" "+rt.path, rt.handler)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: api.ErrorDetail{Code: api.CodeNotFound, Message: "ops endpoints: /healthz /readyz /metrics"}})
	})
	return mux
}
