package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/vaultd/vaultd/policy"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// readBody reads a bounded JSON body; it writes the error itself.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, r, api.CodePayloadTooLarge, fmt.Sprintf("body exceeds %d bytes", s.maxBody))
		} else {
			writeError(w, r, api.CodeBadRequest, "cannot read body")
		}
		return nil, false
	}
	return body, true
}

// auditTimeout bounds a detached audit write (a store that cannot commit
// in this time is failing, and the call fails closed).
const auditTimeout = 30 * time.Second

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// record writes an audit event; a failure fails the call (audit is
// synchronous), so the caller must stop and answer 503. The write is
// detached from the caller: an event about something that already
// happened (a token sent upstream) is recorded even when the caller has
// hung up, timed out or reset the stream.
func (s *Server) record(ctx context.Context, ev audit.Event) error {
	ev.RequestID = requestID(ctx)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if _, err := s.audit.Record(ctx, ev); err != nil {
		s.log.ErrorContext(ctx, "audit write failed", "request_id", ev.RequestID, "action", ev.Action, "err", err)
		return err
	}
	return nil
}

// ---- tenants (operator) ----

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
	w, r, sub := q.w, q.r, q.sub
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
	ctx := r.Context()
	t, err := s.vault.CreateTenant(ctx, s.keyOpEvent(r, sub, http.StatusCreated), req.ID)
	if err != nil {
		s.keyOpFailed(w, r, sub, audit.ActionTenantCreate, req.ID, "", err)
		return
	}
	writeJSON(w, http.StatusCreated, viewTenant(t))
}

// keyOpEvent is the audit event a tenant/key operation commits together
// with its change on success (vault.Service.tenantWrite).
func (s *Server) keyOpEvent(r *http.Request, sub policy.Subject, status int) audit.Event {
	return audit.Event{Actor: sub.Principal, OnBehalfOf: sub.OnBehalfOf, RequestID: requestID(r.Context()), HTTPStatus: status}
}

// keyOpFailed audits a failed tenant/key operation and answers it. A
// missing tenant is not audited: it answers like any unknown id.
func (s *Server) keyOpFailed(w http.ResponseWriter, r *http.Request, sub policy.Subject, action, tenant, detailPrefix string, err error) {
	if !errors.Is(err, vault.ErrTenantNotFound) {
		_ = s.record(r.Context(), failedWrite(audit.Event{TenantID: tenant, Actor: sub.Principal, OnBehalfOf: sub.OnBehalfOf,
			Action: action, Detail: detailPrefix + errKind(err)}, err))
	}
	s.fail(w, r, err, msgTenantNotFound)
}

func (s *Server) getTenant(q *request) {
	w, r := q.w, q.r
	t, err := s.vault.GetTenant(r.Context(), q.id)
	if err != nil {
		s.fail(w, r, err, msgTenantNotFound)
		return
	}
	writeJSON(w, http.StatusOK, viewTenant(t))
}

func (s *Server) listTenants(q *request) {
	w, r := q.w, q.r
	ts, err := s.vault.ListTenants(r.Context())
	if err != nil {
		s.fail(w, r, err, msgTenantNotFound)
		return
	}
	out := api.TenantList{Tenants: make([]api.TenantKeys, 0, len(ts))}
	for _, t := range ts {
		out.Tenants = append(out.Tenants, viewTenantKeys(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) rotateDEK(q *request) {
	w, r, sub, id := q.w, q.r, q.sub, q.id
	t, err := s.vault.RotateDEK(r.Context(), s.keyOpEvent(r, sub, http.StatusOK), id)
	if err != nil {
		s.keyOpFailed(w, r, sub, audit.ActionKeyRotate, id, "", err)
		return
	}
	writeJSON(w, http.StatusOK, viewTenantKeys(t))
}

// rewrapTenant serves POST /v1/tenants/{id}/rewrap (operator): every DEK
// of the tenant wrapped again under the current KEK, after a KEK rotation.
// Audited as key.rotate with detail "rewrap ...".
func (s *Server) rewrapTenant(q *request) {
	w, r, sub, id := q.w, q.r, q.sub, q.id
	t, n, err := s.vault.RewrapTenant(r.Context(), s.keyOpEvent(r, sub, http.StatusOK), id)
	if err != nil {
		s.keyOpFailed(w, r, sub, audit.ActionKeyRotate, id, "rewrap: ", err)
		return
	}
	writeJSON(w, http.StatusOK, api.TenantRewrap{TenantKeys: viewTenantKeys(t), RewrappedDEKs: n})
}

func (s *Server) listProviders(q *request) {
	out := api.ProviderList{Providers: []api.Provider{}}
	for _, n := range s.vault.ProviderNames() {
		p, _ := s.vault.Provider(n)
		out.Providers = append(out.Providers, api.Provider{Name: n, APIBaseURL: p.APIBase.String(), Scopes: p.Scopes, Revocation: p.Endpoint.RevocationURL != ""})
	}
	writeJSON(q.w, http.StatusOK, out)
}

// ---- integrations (app) ----

func viewIntegration(md vault.Metadata) api.Integration {
	return api.Integration{
		ID: md.ID, TenantID: md.TenantID, Provider: md.Provider, Scopes: md.Scopes, Status: md.Status,
		ExpiresAt: md.ExpiresAt, CreatedAt: md.CreatedAt, UpdatedAt: md.UpdatedAt,
		LastRefreshAt: md.LastRefreshAt, LastUsedAt: md.LastUsedAt, RefreshCount: md.RefreshCount,
		ConsecutiveFailures: md.ConsecutiveFailures, LastError: md.LastError,
	}
}

func (s *Server) storeToken(q *request) {
	w, r, sub, id := q.w, q.r, q.sub, q.id
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var req api.StoreTokenRequest
	if err := decodeStrict(body, &req); err != nil || req.Provider == "" || len(req.Token) == 0 {
		writeError(w, r, api.CodeBadRequest, `body must be {"provider":"...","token":{...OAuth token response...}}`)
		return
	}
	tok, err := oauth.ParseTokenJSON(req.Token)
	if err != nil {
		writeError(w, r, api.CodeBadRequest, "token must be an OAuth token response with a string access_token")
		return
	}
	if !storage.ValidID(id) {
		writeError(w, r, api.CodeBadRequest, "invalid integration id: 1-128 of [A-Za-z0-9._-], starting alphanumeric")
		return
	}
	ctx := r.Context()
	ev := audit.Event{TenantID: sub.Tenant, IntegrationID: id, Actor: sub.Principal, OnBehalfOf: sub.OnBehalfOf,
		Action: audit.ActionTokenStore, RequestID: requestID(ctx), Detail: "provider=" + safeName(req.Provider)}
	// On success the event is committed with the record (vault.StoreToken).
	md, err := s.vault.StoreToken(ctx, audit.Event{Actor: ev.Actor, OnBehalfOf: ev.OnBehalfOf, RequestID: ev.RequestID,
		HTTPStatus: http.StatusOK, Detail: ev.Detail}, sub.Tenant, id, req.Provider, tok)
	if err != nil {
		_ = s.record(ctx, failedWrite(ev, err))
		s.fail(w, r, err, msgIntegrationNotFound)
		return
	}
	writeJSON(w, http.StatusOK, viewIntegration(md))
}

func (s *Server) getIntegration(q *request) {
	w, r := q.w, q.r
	md, err := s.vault.GetIntegration(r.Context(), q.sub.Tenant, q.id)
	if err != nil {
		s.fail(w, r, err, msgIntegrationNotFound)
		return
	}
	writeJSON(w, http.StatusOK, viewIntegration(md))
}

func (s *Server) listIntegrations(q *request) {
	w, r := q.w, q.r
	mds, err := s.vault.ListIntegrations(r.Context(), q.sub.Tenant)
	if err != nil {
		s.fail(w, r, err, msgIntegrationNotFound)
		return
	}
	out := api.IntegrationList{Integrations: make([]api.Integration, 0, len(mds))}
	for _, md := range mds {
		out.Integrations = append(out.Integrations, viewIntegration(md))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteIntegration(q *request) {
	w, r, sub, id := q.w, q.r, q.sub, q.id
	ctx := r.Context()
	revoked, err := s.vault.Disconnect(ctx, audit.Event{Actor: sub.Principal, OnBehalfOf: sub.OnBehalfOf,
		RequestID: requestID(ctx), HTTPStatus: http.StatusOK}, sub.Tenant, id)
	if err != nil {
		if !errors.Is(err, vault.ErrNotFound) {
			_ = s.record(ctx, failedWrite(audit.Event{TenantID: sub.Tenant, IntegrationID: id, Actor: sub.Principal, OnBehalfOf: sub.OnBehalfOf,
				Action: audit.ActionIntegrationDelete, Detail: errKind(err)}, err))
		}
		s.fail(w, r, err, msgIntegrationNotFound)
		return
	}
	// The integration.delete event was committed with the delete.
	writeJSON(w, http.StatusOK, api.DeleteResult{RevokedAtProvider: revoked})
}

// ---- audit (auditor) ----

// queryAudit streams the audit events q.filter selects (auditFilter has
// parsed it and Decide has allowed its tenant).
func (s *Server) queryAudit(q *request) {
	w, r := q.w, q.r
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	wrote := false
	err := s.audit.Query(r.Context(), q.filter, func(line []byte) error {
		if !wrote {
			w.WriteHeader(http.StatusOK)
			wrote = true
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		if len(line) == 0 || line[len(line)-1] != '\n' {
			_, err := w.Write([]byte{'\n'})
			return err
		}
		return nil
	})
	if err != nil {
		s.log.ErrorContext(r.Context(), "audit query failed", "request_id", requestID(r.Context()), "wrote", wrote, "err", err)
		if wrote {
			// A cut export would still verify as a chain prefix: reset
			// the stream so the client sees a failure, not a 200.
			panic(http.ErrAbortHandler)
		}
		writeError(w, r, api.CodeIntegrationUnavailable, "audit store unavailable")
		return
	}
	if !wrote {
		w.WriteHeader(http.StatusOK)
	}
}

// safeName keeps caller-supplied names out of audit when they are not
// plausible identifiers (they could be anything, including a pasted token).
func safeName(n string) string {
	if storage.ValidID(n) && len(n) <= 64 {
		return n
	}
	return "(invalid)"
}
