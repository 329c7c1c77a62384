package server

import (
	"errors"
	"slices"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// The operator's routes: tenants, their keys, the provider list.

func viewTenant(t storage.Tenant) api.Tenant {
	return api.Tenant{ID: t.ID, CreatedAt: t.CreatedAt.UTC(), KEKVersion: t.KEKVersion, DEKVersion: t.DEKVersion, Status: t.Status}
}

// viewTenantKeys is the tenant as the key-management extensions show it
// (GET /v1/tenants/{id} keeps to viewTenant's fields).
func viewTenantKeys(t storage.Tenant) api.TenantKeys {
	inUse := []uint32{}
	for _, d := range t.DEKs {
		if !slices.Contains(inUse, d.KEKVersion) {
			inUse = append(inUse, d.KEKVersion)
		}
	}
	slices.Sort(inUse)
	return api.TenantKeys{Tenant: viewTenant(t), KEKVersionsInUse: inUse}
}

func (s *Server) createTenant(q *request) {
	w, r := q.w, q.r
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var req api.CreateTenantRequest
	if err := decodeStrict(body, &req); err != nil {
		writeError(w, r, api.CodeBadRequest, "body must be {\"id\":\"...\"}")
		return
	}
	if !storage.ValidID(req.ID) {
		writeError(w, r, api.CodeBadRequest, "invalid tenant id: 1-128 of [A-Za-z0-9._-], starting alphanumeric")
		return
	}
	t, err := s.vault.CreateTenant(r.Context(), q.caller(), req.ID, vault.WithStatus(q.status))
	if err != nil {
		s.keyOpFailed(q, audit.ActionTenantCreate, req.ID, "", err)
		return
	}
	writeJSON(w, q.status, viewTenant(t))
}

// keyOpFailed audits a failed tenant/key operation and answers it. A
// missing tenant is not audited: it answers like any unknown id. A failure
// outside the error table answers 503 key_unavailable (keyOpErr).
func (s *Server) keyOpFailed(q *request, action, tenant, detailPrefix string, err error) {
	row, ok := keyOpErr(err)
	if !errors.Is(err, vault.ErrTenantNotFound) {
		ev := q.event(action, tenant, "", detailPrefix+row.kind)
		ev.Outcome, ev.HTTPStatus = audit.OutcomeFailure, row.code.Status()
		_ = s.record(q.r.Context(), ev)
	}
	if !ok || row.code == api.CodeKeyUnavailable {
		s.log.ErrorContext(q.r.Context(), "request failed", "request_id", requestID(q.r.Context()), "err", err)
	}
	writeError(q.w, q.r, row.code, row.publicMessage(err, msgTenantNotFound))
}

func (s *Server) getTenant(q *request) {
	t, err := s.vault.GetTenant(q.r.Context(), q.id)
	if err != nil {
		s.fail(q.w, q.r, err, msgTenantNotFound)
		return
	}
	writeJSON(q.w, q.status, viewTenant(t))
}

func (s *Server) listTenants(q *request) {
	ts, err := s.vault.ListTenants(q.r.Context())
	if err != nil {
		s.fail(q.w, q.r, err, msgTenantNotFound)
		return
	}
	out := api.TenantList{Tenants: make([]api.TenantKeys, 0, len(ts))}
	for _, t := range ts {
		out.Tenants = append(out.Tenants, viewTenantKeys(t))
	}
	writeJSON(q.w, q.status, out)
}

func (s *Server) rotateDEK(q *request) {
	t, err := s.vault.RotateDEK(q.r.Context(), q.caller(), q.id, vault.WithStatus(q.status))
	if err != nil {
		s.keyOpFailed(q, audit.ActionKeyRotate, q.id, "", err)
		return
	}
	writeJSON(q.w, q.status, viewTenantKeys(t))
}

// rewrapTenant serves POST /v1/tenants/{id}/rewrap: every DEK of the
// tenant wrapped again under the current KEK, after a KEK rotation.
// Audited as key.rotate with detail "rewrap ...".
func (s *Server) rewrapTenant(q *request) {
	t, n, err := s.vault.RewrapTenant(q.r.Context(), q.caller(), q.id, vault.WithStatus(q.status))
	if err != nil {
		s.keyOpFailed(q, audit.ActionKeyRotate, q.id, "rewrap: ", err)
		return
	}
	writeJSON(q.w, q.status, api.TenantRewrap{TenantKeys: viewTenantKeys(t), RewrappedDEKs: n})
}

func (s *Server) listProviders(q *request) {
	out := api.ProviderList{Providers: []api.Provider{}}
	for _, n := range s.vault.ProviderNames() {
		p, _ := s.vault.Provider(n)
		out.Providers = append(out.Providers, api.Provider{Name: n, APIBaseURL: providerBase(p), Scopes: p.Scopes, Revocation: p.Endpoint.RevocationURL != ""})
	}
	writeJSON(q.w, q.status, out)
}

// providerBase is a provider's api_base_url as listed: a template's may
// keep {param} placeholders, filled per integration.
func providerBase(p *vault.Provider) string {
	if p.APIBase != nil {
		return p.APIBase.String()
	}
	return p.APIBaseURL
}
