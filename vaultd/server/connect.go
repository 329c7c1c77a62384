package server

import (
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// The app's connect-session routes (the browser side is connectweb.go).

const msgSessionNotFound = "connect session not found"

func oauthClient(c *api.OAuthClient) *vault.OAuthClient {
	if c == nil {
		return nil
	}
	return &vault.OAuthClient{ClientID: c.ClientID, ClientSecret: secret.NewString(c.ClientSecret)}
}

func (s *Server) createConnectSession(q *request) {
	w, r := q.w, q.r
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var req api.CreateConnectSessionRequest
	if err := decodeStrict(body, &req); err != nil || req.IntegrationID == "" || req.Provider == "" || req.ReturnTo == "" {
		writeError(w, r, api.CodeBadRequest, `body must be {"integration_id":"...","provider":"...","return_to":"https://...","scopes":[...]} (scopes, params and client optional)`)
		return
	}
	cs, err := s.vault.CreateConnectSession(r.Context(), q.caller(), q.sub.Tenant, vault.ConnectRequest{
		IntegrationID: req.IntegrationID, Provider: req.Provider, Scopes: req.Scopes,
		ReturnTo: req.ReturnTo, Params: req.Params, Client: oauthClient(req.Client),
	}, vault.WithStatus(q.status))
	if err != nil {
		integ := req.IntegrationID
		if !storage.ValidID(integ) {
			integ = ""
		}
		s.failed(q, q.event(audit.ActionConnectStart, q.sub.Tenant, integ, "provider="+vault.SafeName(req.Provider)), err)
		s.fail(w, r, err, msgSessionNotFound)
		return
	}
	writeJSON(w, q.status, api.ConnectSessionCreated{ID: cs.ID, URL: cs.URL, ExpiresAt: cs.ExpiresAt})
}

func (s *Server) getConnectSession(q *request) {
	cs, err := s.vault.GetConnectSession(q.r.Context(), q.sub.Tenant, q.id)
	if err != nil {
		s.fail(q.w, q.r, err, msgSessionNotFound)
		return
	}
	writeJSON(q.w, q.status, api.ConnectSession{
		ID: cs.ID, IntegrationID: cs.IntegrationID, Provider: cs.Provider,
		Status: cs.Status, Error: cs.Error, ExpiresAt: cs.ExpiresAt,
	})
}
