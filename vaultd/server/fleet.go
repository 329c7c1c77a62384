package server

import (
	"errors"
	"net/url"
	"strconv"
	"strings"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// Health and the fleet view: GET /v1/integrations/{id}/health (app, own
// tenant) and GET /v1/admin/integrations (operator).

func viewHealth(h vault.Health) api.IntegrationHealth {
	out := api.IntegrationHealth{Score: h.Score, Flagged: h.Flagged, Factors: make([]api.HealthFactor, 0, len(h.Factors))}
	for _, f := range h.Factors {
		out.Factors = append(out.Factors, api.HealthFactor{Name: f.Name, OK: f.OK, Detail: f.Detail})
	}
	return out
}

func (s *Server) integrationHealth(q *request) {
	h, err := s.vault.IntegrationHealth(q.r.Context(), q.sub.Tenant, q.id)
	if err != nil {
		s.fail(q.w, q.r, err, msgIntegrationNotFound)
		return
	}
	writeJSON(q.w, q.status, viewHealth(h))
}

func (s *Server) fleet(q *request) {
	fq, err := parseFleetQuery(q.r.URL.Query())
	if err != nil {
		writeError(q.w, q.r, api.CodeBadRequest, "invalid fleet query: "+err.Error())
		return
	}
	page, err := s.vault.Fleet(q.r.Context(), fq)
	if err != nil {
		s.fail(q.w, q.r, err, msgIntegrationNotFound)
		return
	}
	out := api.FleetList{Integrations: make([]api.FleetIntegration, 0, len(page.Entries))}
	for _, e := range page.Entries {
		out.Integrations = append(out.Integrations, api.FleetIntegration{Integration: viewIntegration(e.Metadata), Health: viewHealth(e.Health)})
	}
	if page.NextTenant != "" {
		out.Next = page.NextTenant + "/" + page.NextID
	}
	writeJSON(q.w, q.status, out)
}

// fleetStatuses are the integration statuses the status filter accepts.
var fleetStatuses = []string{storage.StatusActive, storage.StatusDegraded, storage.StatusReauthorizationRequired}

// parseFleetQuery reads the fleet view's query. Its errors name the
// parameter, never echo a value.
func parseFleetQuery(v url.Values) (vault.FleetQuery, error) {
	var q vault.FleetQuery
	for k, vs := range v {
		switch k {
		case api.FleetParamTenant, api.FleetParamProvider, api.FleetParamStatus, api.FleetParamFlagged,
			api.FleetParamLimit, api.FleetParamAfter:
			if len(vs) != 1 {
				return q, errors.New(k + " given more than once")
			}
		default:
			return q, errors.New("unknown parameter")
		}
	}
	if t := v.Get(api.FleetParamTenant); t != "" {
		if !storage.ValidID(t) {
			return q, errors.New("tenant_id is not a valid id")
		}
		q.TenantID = t
	}
	if p := v.Get(api.FleetParamProvider); p != "" {
		if !storage.ValidID(p) {
			return q, errors.New("provider is not a valid name")
		}
		q.Provider = p
	}
	if st := v.Get(api.FleetParamStatus); st != "" {
		ok := false
		for _, s := range fleetStatuses {
			ok = ok || s == st
		}
		if !ok {
			return q, errors.New("status must be one of " + strings.Join(fleetStatuses, ", "))
		}
		q.Status = st
	}
	switch v.Get(api.FleetParamFlagged) {
	case "":
	case "true":
		b := true
		q.Flagged = &b
	case "false":
		b := false
		q.Flagged = &b
	default:
		return q, errors.New("flagged must be true or false")
	}
	q.Limit = api.FleetDefaultLimit
	if l := v.Get(api.FleetParamLimit); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > api.FleetMaxLimit {
			return q, errors.New("limit must be between 1 and " + strconv.Itoa(api.FleetMaxLimit))
		}
		q.Limit = n
	}
	if a := v.Get(api.FleetParamAfter); a != "" {
		t, id, ok := strings.Cut(a, "/")
		if !ok || !storage.ValidID(t) || !storage.ValidID(id) {
			return q, errors.New(`after must be "tenant/integration" as a page's next gives it`)
		}
		q.AfterTenant, q.AfterID = t, id
	}
	return q, nil
}
