package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// The operator's tenant lifecycle routes: disable, enable, offboard, and
// the pending revocations.

// disableTenant serves POST /v1/tenants/{id}/disable: the tenant's app
// calls answer 403 tenant_disabled until it is enabled. It answers the
// tenant as GET /v1/tenants/{id} does.
func (s *Server) disableTenant(q *request) {
	t, err := s.vault.DisableTenant(q.r.Context(), q.caller(), q.id, vault.WithStatus(q.status))
	if err != nil {
		s.keyOpFailed(q, audit.ActionTenantDisable, q.id, "", err)
		return
	}
	writeJSON(q.w, q.status, viewTenant(t))
}

// enableTenant serves POST /v1/tenants/{id}/enable.
func (s *Server) enableTenant(q *request) {
	t, err := s.vault.EnableTenant(q.r.Context(), q.caller(), q.id, vault.WithStatus(q.status))
	if err != nil {
		s.keyOpFailed(q, audit.ActionTenantEnable, q.id, "", err)
		return
	}
	writeJSON(q.w, q.status, viewTenant(t))
}

// offboardTenant serves DELETE /v1/tenants/{id}: revoke, delete,
// crypto-shred (vault.OffboardTenant).
func (s *Server) offboardTenant(q *request) {
	res, err := s.vault.OffboardTenant(q.r.Context(), q.caller(), q.id, vault.WithStatus(q.status))
	if err != nil {
		s.keyOpFailed(q, audit.ActionTenantOffboard, q.id, "", err)
		return
	}
	if !res.Shredded {
		s.log.WarnContext(q.r.Context(), "tenant offboarded; its key is destroyed later", "request_id", requestID(q.r.Context()), "tenant_id", q.id)
	}
	writeJSON(q.w, q.status, api.OffboardResult{
		Integrations: res.Integrations, RevokedAtProvider: res.RevokedAtProvider, RevocationsPending: res.RevocationsPending,
	})
}

// listRevocations serves GET /v1/admin/revocations: the revocations still
// pending, never a token.
func (s *Server) listRevocations(q *request) {
	rs, err := s.vault.ListRevocations(q.r.Context())
	if err != nil {
		s.fail(q.w, q.r, err, msgNotFound)
		return
	}
	out := api.RevocationList{Revocations: make([]api.Revocation, 0, len(rs))}
	for _, r := range rs {
		out.Revocations = append(out.Revocations, api.Revocation{
			ID: r.ID, TenantID: r.TenantID, IntegrationID: r.IntegrationID, Provider: r.Provider, Hint: r.Hint,
			Attempts: r.Attempts, NextAttemptAt: r.NextAttemptAt, LastError: r.LastError, CreatedAt: r.CreatedAt,
		})
	}
	writeJSON(q.w, q.status, out)
}

// newRevocationsPending registers vaultd_revocations_pending on reg. No
// labels: tenants are unbounded, and GET /v1/admin/revocations has the
// details.
func newRevocationsPending(reg prometheus.Registerer) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vaultd_revocations_pending",
		Help: "Token revocations that failed and are queued for retry (set after each retry round).",
	})
	reg.MustRegister(g)
	return g
}

// SetRevocationsPending sets vaultd_revocations_pending (the daemon's
// revocation loop, after each round).
func (m *Metrics) SetRevocationsPending(n int) { m.revocationsPending.Set(float64(n)) }
