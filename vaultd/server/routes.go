package server

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/vaultd/vaultd/policy"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// scope says for whom a route acts.
type scope uint8

const (
	// platform routes are the operator's: no tenant is resolved, the
	// resource (if any) comes from the path.
	platform scope = iota
	// tenantScoped routes act for the caller's tenant, taken from its
	// principal or its tenant-context JWT (app and auditor principals);
	// a tenant never comes from the path or the body.
	tenantScoped
)

// route is one row of the API: a method and path pattern, the policy
// action it needs, for whom it acts, what the action applies to, the
// status a success answers, and the handler, which runs only once the
// caller is known and authorized.
type route struct {
	method   string // "" matches every method (the proxy route)
	pattern  string // "{id}" is one path segment, "{path...}" the rest
	label    string // the route label of logs and metrics
	action   policy.Action
	scope    scope
	resource func(q *request) (policy.Resource, bool)
	// status answers a success, and is the http_status of the audit event
	// a write commits with its change. 0 on the proxy route, which answers
	// with the upstream's status.
	status int
	handle func(s *Server, q *request)
}

// routes is the API. Routes sharing a pattern are listed together, in the
// order their methods appear in a 405's Allow header. docs/openapi.json
// documents every row (TestOpenAPIMatchesRoutes).
var routes = []route{
	{http.MethodGet, "/v1/tenants", "tenants", policy.ActTenantList, platform, noResource, http.StatusOK, (*Server).listTenants},
	{http.MethodPost, "/v1/tenants", "tenants", policy.ActTenantCreate, platform, noResource, http.StatusCreated, (*Server).createTenant},
	{http.MethodGet, "/v1/tenants/{id}", "tenant", policy.ActTenantRead, platform, pathTenant, http.StatusOK, (*Server).getTenant},
	{http.MethodDelete, "/v1/tenants/{id}", "tenant", policy.ActTenantOffboard, platform, pathTenant, http.StatusOK, (*Server).offboardTenant},
	{http.MethodPost, "/v1/tenants/{id}/disable", "tenant.disable", policy.ActTenantDisable, platform, pathTenant, http.StatusOK, (*Server).disableTenant},
	{http.MethodPost, "/v1/tenants/{id}/enable", "tenant.enable", policy.ActTenantDisable, platform, pathTenant, http.StatusOK, (*Server).enableTenant},
	{http.MethodPost, "/v1/tenants/{id}/rotate-dek", "tenant.rotate", policy.ActKeyRotate, platform, pathTenant, http.StatusOK, (*Server).rotateDEK},
	{http.MethodPost, "/v1/tenants/{id}/rewrap", "tenant.rewrap", policy.ActKeyRotate, platform, pathTenant, http.StatusOK, (*Server).rewrapTenant},
	{http.MethodGet, "/v1/integrations", "integrations", policy.ActIntegrationList, tenantScoped, ownTenant, http.StatusOK, (*Server).listIntegrations},
	{http.MethodGet, "/v1/integrations/{id}", "integration", policy.ActIntegrationRead, tenantScoped, ownTenant, http.StatusOK, (*Server).getIntegration},
	{http.MethodPut, "/v1/integrations/{id}", "integration", policy.ActIntegrationWrite, tenantScoped, ownTenant, http.StatusOK, (*Server).storeToken},
	{http.MethodDelete, "/v1/integrations/{id}", "integration", policy.ActIntegrationDelete, tenantScoped, ownTenant, http.StatusOK, (*Server).deleteIntegration},
	{http.MethodGet, "/v1/integrations/{id}/health", "integration.health", policy.ActIntegrationHealth, tenantScoped, ownTenant, http.StatusOK, (*Server).integrationHealth},
	{http.MethodPost, "/v1/integrations/{id}/execute", "execute", policy.ActIntegrationUse, tenantScoped, ownTenant, http.StatusOK, (*Server).execute},
	{"", "/v1/integrations/{id}/proxy/{path...}", "proxy", policy.ActIntegrationUse, tenantScoped, ownTenant, 0, (*Server).proxy},
	{http.MethodPost, "/v1/connect/sessions", "connect.sessions", policy.ActConnectCreate, tenantScoped, ownTenant, http.StatusCreated, (*Server).createConnectSession},
	{http.MethodGet, "/v1/connect/sessions/{id}", "connect.session", policy.ActConnectRead, tenantScoped, ownTenant, http.StatusOK, (*Server).getConnectSession},
	{http.MethodGet, "/v1/audit", "audit", policy.ActAuditRead, tenantScoped, auditFilter, http.StatusOK, (*Server).queryAudit},
	{http.MethodGet, "/v1/admin/backup", "backup", policy.ActStoreBackup, platform, noResource, http.StatusOK, (*Server).backup},
	{http.MethodGet, "/v1/admin/revocations", "revocations", policy.ActRevocationList, platform, noResource, http.StatusOK, (*Server).listRevocations},
	{http.MethodGet, "/v1/admin/webhooks/deliveries", "webhooks.deliveries", policy.ActWebhookDelivery, platform, noResource, http.StatusOK, (*Server).listDeliveries},
	{http.MethodPost, "/v1/admin/webhooks/deliveries/{id}/redeliver", "webhooks.redeliver", policy.ActWebhookDelivery, platform, noResource, http.StatusOK, (*Server).redeliver},
	{http.MethodGet, "/v1/admin/integrations", "admin.integrations", policy.ActFleetRead, platform, noResource, http.StatusOK, (*Server).fleet},
	{http.MethodGet, "/v1/providers", "providers", policy.ActProviderList, platform, noResource, http.StatusOK, (*Server).listProviders},
}

// request is an API request past the route table's gates.
type request struct {
	w      http.ResponseWriter
	r      *http.Request
	sub    policy.Subject
	status int    // the route's success status
	id     string // the path's {id}, unescaped ("" when it does not decode, which no id validates)
	rest   string // the proxy route's {path...}, still escaped: proxy.Target judges it
	// filter is the audit route's query, set by auditFilter.
	filter audit.Filter
}

// caller is who asks, as the vault records it.
func (q *request) caller() vault.Caller {
	return vault.Caller{Principal: q.sub.Principal, OnBehalfOf: q.sub.OnBehalfOf, RequestID: requestID(q.r.Context())}
}

// event is an audit event the edge writes itself about q (a denial or a
// failure the vault did not record).
func (q *request) event(action, tenantID, integrationID, detail string) audit.Event {
	return audit.Event{TenantID: tenantID, IntegrationID: integrationID, Actor: q.sub.Principal, OnBehalfOf: q.sub.OnBehalfOf,
		Action: action, Detail: detail}
}

func noResource(*request) (policy.Resource, bool) { return policy.Resource{}, true }

func pathTenant(q *request) (policy.Resource, bool) { return policy.Resource{Tenant: q.id}, true }

// ownTenant: the resource's tenant is the caller's own. Decide still
// checks the role and that there is a tenant.
func ownTenant(q *request) (policy.Resource, bool) {
	return policy.Resource{Tenant: q.sub.Tenant}, true
}

// auditFilter parses the audit query; the resource is the tenant it asks
// for. A tenant-bound auditor's filter defaults to its tenant, and asking
// for another is refused by Decide.
func auditFilter(q *request) (policy.Resource, bool) {
	f, err := audit.ParseFilter(q.r.URL.Query())
	if err != nil {
		writeError(q.w, q.r, api.CodeBadRequest, "invalid audit filter: "+err.Error())
		return policy.Resource{}, false
	}
	if q.sub.Tenant != "" && f.TenantID == "" {
		f.TenantID = q.sub.Tenant
	}
	q.filter = f
	return policy.Resource{Tenant: f.TenantID}, true
}

// segments of each pattern, split once.
var routeSegs = func() [][]string {
	out := make([][]string, len(routes))
	for i, rt := range routes {
		out[i] = strings.Split(strings.TrimPrefix(rt.pattern, "/"), "/")
	}
	return out
}()

// match finds the route of method and escaped path. With no route for the
// method but some for the path, it returns the path's label and the
// methods to list in Allow.
func match(method, escapedPath string) (rt *route, q *request, label, allow string) {
	segs := strings.Split(strings.TrimPrefix(escapedPath, "/"), "/")
	var allowed []string
	for i := range routes {
		id, rest, ok := matchSegs(routeSegs[i], segs)
		if !ok {
			continue
		}
		if routes[i].method == "" || routes[i].method == method {
			return &routes[i], &request{id: unescape(id), rest: rest, status: routes[i].status}, routes[i].label, ""
		}
		label = routes[i].label
		allowed = append(allowed, routes[i].method)
	}
	return nil, nil, label, strings.Join(allowed, ", ")
}

// matchSegs matches path segments against a pattern's: literals exactly,
// "{id}" any one segment (empty included), "{path...}" whatever is left,
// nothing included.
func matchSegs(pat, segs []string) (id, rest string, ok bool) {
	for i, p := range pat {
		switch {
		case p == "{path...}":
			if len(segs) > i {
				rest = strings.Join(segs[i:], "/")
			}
			return id, rest, len(segs) >= i
		case i >= len(segs):
			return "", "", false
		case p == "{id}":
			id = segs[i]
		case p != segs[i]:
			return "", "", false
		}
	}
	return id, rest, len(segs) == len(pat)
}

// dispatch runs the route table: 404 and 405 first, then the gates
// (subject, resource, policy.Decide) and the handler. It returns the
// route label.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) string {
	rt, q, label, allow := match(r.Method, r.URL.EscapedPath())
	switch {
	case rt == nil && allow != "":
		w.Header().Set("Allow", allow)
		writeError(w, r, api.CodeMethodNotAllowed, "method not allowed")
		return label
	case rt == nil:
		writeError(w, r, api.CodeNotFound, msgNotFound)
		return "notfound"
	}
	q.w, q.r = w, r
	sub, ok := s.subject(w, r, rt.action, rt.scope == tenantScoped)
	if !ok {
		return rt.label
	}
	q.sub = sub
	res, ok := rt.resource(q)
	if !ok {
		return rt.label
	}
	if d := policy.Decide(sub, rt.action, res); !d.Allow {
		s.deny(r.Context(), sub.Principal, sub.OnBehalfOf, sub.Tenant, rt.action, d.Reason)
		writeError(w, r, api.CodeForbidden, msgForbidden)
		return rt.label
	}
	rt.handle(s, q)
	return rt.label
}

// unescape decodes one path segment; an undecodable segment becomes ""
// which no id validates, so it answers like a missing id.
func unescape(seg string) string {
	v, err := url.PathUnescape(seg)
	if err != nil {
		return ""
	}
	return v
}

// subject authenticates the request and resolves its tenant. needTenant
// says whether the action is tenant-scoped (app and auditor actions). On
// failure it writes the error (and audits the denial) and returns false.
func (s *Server) subject(w http.ResponseWriter, r *http.Request, action policy.Action, needTenant bool) (policy.Subject, bool) {
	ctx := r.Context()
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		// The TLS config requires and verifies a client certificate, so
		// this only happens on a misconfigured listener: fail closed.
		writeError(w, r, api.CodeUnauthenticated, "client certificate required")
		return policy.Subject{}, false
	}
	id := s.identity.Load()
	p, ok := id.Directory.Lookup(r.TLS.PeerCertificates[0])
	if !ok {
		name, _ := policy.PrincipalName(r.TLS.PeerCertificates[0])
		s.deny(ctx, name, "", "", action, "unknown principal")
		writeError(w, r, api.CodeForbidden, msgForbidden)
		return policy.Subject{}, false
	}
	sub := policy.Subject{Principal: p.Name, Roles: p.Roles}
	if needTenant && (p.HasRole(policy.RoleApp) || p.HasRole(policy.RoleAuditor)) {
		tenant, obo, err := policy.ResolveTenant(p, r.Header.Get(api.HeaderTenantContext), id.Verifier)
		if err != nil {
			s.log.InfoContext(ctx, "tenant assertion refused", "request_id", requestID(ctx), "principal", p.Name, "reason", err.Error())
			s.deny(ctx, p.Name, "", "", action, "tenant assertion refused")
			writeError(w, r, api.CodeUnauthenticated, msgUnauthenticated)
			return policy.Subject{}, false
		}
		sub.Tenant, sub.OnBehalfOf = tenant, obo
	}
	return sub, true
}

// deny audits a refused request as auth.denied. The write is detached
// (record): the refusal has happened, and a caller that hangs up as soon
// as it has sent its request must not keep it off the record.
func (s *Server) deny(ctx context.Context, principal, obo, tenant string, action policy.Action, reason string) {
	s.metrics.authDenied.Inc()
	_ = s.record(ctx, audit.Event{
		TenantID: tenant, Actor: principal, OnBehalfOf: obo, Action: audit.ActionAuthDenied,
		Outcome: audit.OutcomeDenied, Detail: fmt.Sprintf("%s: %s", action, reason),
	})
}
