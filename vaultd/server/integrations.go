package server

import (
	"errors"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// The app's routes on integration records (proxy and execute are in
// outbound.go). The tenant is always the caller's own (q.sub.Tenant).

func viewIntegration(md vault.Metadata) api.Integration {
	return api.Integration{
		ID: md.ID, TenantID: md.TenantID, Provider: md.Provider, Scopes: md.Scopes, Status: md.Status,
		ExpiresAt: md.ExpiresAt, CreatedAt: md.CreatedAt, UpdatedAt: md.UpdatedAt,
		LastRefreshAt: md.LastRefreshAt, LastUsedAt: md.LastUsedAt, RefreshCount: md.RefreshCount,
		ConsecutiveFailures: md.ConsecutiveFailures, LastError: md.LastError,
		APIBaseURL: md.APIBaseURL, Grant: md.Grant,
	}
}

func (s *Server) storeToken(q *request) {
	w, r := q.w, q.r
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var req api.StoreTokenRequest
	if err := decodeStrict(body, &req); err != nil || req.Provider == "" {
		writeError(w, r, api.CodeBadRequest, `body must be {"provider":"...","token":{...OAuth token response...}}`)
		return
	}
	if !storage.ValidID(q.id) {
		writeError(w, r, api.CodeBadRequest, "invalid integration id: 1-128 of [A-Za-z0-9._-], starting alphanumeric")
		return
	}
	x := vault.StoreExtras{Params: req.Params, Client: oauthClient(req.Client), Scopes: req.Scopes}
	var md vault.Metadata
	var err error
	if len(req.Token) == 0 || string(req.Token) == "null" {
		// No token: vaultd obtains it itself, for a client_credentials
		// provider; any other provider refuses (bad_request).
		md, err = s.vault.ObtainClientCredentials(r.Context(), q.caller(), q.sub.Tenant, q.id, req.Provider, x, vault.WithStatus(q.status))
	} else {
		var tok oauth.Token
		if p, ok := s.vault.Provider(req.Provider); ok {
			// The provider's extra members (a template's API host field)
			// are read from the same body by the same parser.
			tok, err = oauth.ParseTokenResponse(req.Token, p.Endpoint)
		} else {
			tok, err = oauth.ParseTokenJSON(req.Token)
		}
		if err != nil {
			writeError(w, r, api.CodeBadRequest, "token must be an OAuth token response with a string access_token")
			return
		}
		// On success the token.store event commits with the record.
		md, err = s.vault.StoreTokenWith(r.Context(), q.caller(), q.sub.Tenant, q.id, req.Provider, tok, x, vault.WithStatus(q.status))
	}
	if err != nil {
		s.failed(q, q.event(audit.ActionTokenStore, q.sub.Tenant, q.id, "provider="+vault.SafeName(req.Provider)), err)
		s.fail(w, r, err, msgIntegrationNotFound)
		return
	}
	writeJSON(w, q.status, viewIntegration(md))
}

func (s *Server) getIntegration(q *request) {
	md, err := s.vault.GetIntegration(q.r.Context(), q.sub.Tenant, q.id)
	if err != nil {
		s.fail(q.w, q.r, err, msgIntegrationNotFound)
		return
	}
	writeJSON(q.w, q.status, viewIntegration(md))
}

func (s *Server) listIntegrations(q *request) {
	mds, err := s.vault.ListIntegrations(q.r.Context(), q.sub.Tenant)
	if err != nil {
		s.fail(q.w, q.r, err, msgIntegrationNotFound)
		return
	}
	out := api.IntegrationList{Integrations: make([]api.Integration, 0, len(mds))}
	for _, md := range mds {
		out.Integrations = append(out.Integrations, viewIntegration(md))
	}
	writeJSON(q.w, q.status, out)
}

func (s *Server) deleteIntegration(q *request) {
	// On success the integration.delete event commits with the delete.
	revoked, err := s.vault.Disconnect(q.r.Context(), q.caller(), q.sub.Tenant, q.id, vault.WithStatus(q.status))
	if err != nil {
		if !errors.Is(err, vault.ErrNotFound) {
			s.failed(q, q.event(audit.ActionIntegrationDelete, q.sub.Tenant, q.id, errKind(err)), err)
		}
		s.fail(q.w, q.r, err, msgIntegrationNotFound)
		return
	}
	writeJSON(q.w, q.status, api.DeleteResult{RevokedAtProvider: revoked})
}
