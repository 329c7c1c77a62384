package vault

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// StoreExtras are the optional parts of a store_token body: a template's
// per-connection parameters, a per-integration OAuth client, and the
// scopes a client-credentials integration asks for.
type StoreExtras struct {
	Params map[string]string
	Client *OAuthClient
	Scopes []string
}

// ObtainClientCredentials connects an integration of a client-credentials
// provider: vaultd asks the token endpoint itself, under the integration's
// lock (one call however many callers race), and stores the token with
// its token.store event. The token never leaves vaultd.
func (s *Service) ObtainClientCredentials(ctx context.Context, c Caller, tenantID, id, providerName string, x StoreExtras, opts ...WriteOption) (Metadata, error) {
	if !storage.ValidID(id) {
		return Metadata{}, badRequest("invalid integration id")
	}
	p, ok := s.Provider(providerName)
	if !ok {
		return Metadata{}, badRequest("unknown provider")
	}
	if p.grant() != GrantClientCredentials {
		return Metadata{}, badRequest("token is required: this provider does not use the client_credentials grant")
	}
	scopes, err := requestedScopes(p, x.Scopes)
	if err != nil {
		return Metadata{}, err
	}
	if err := checkParams(p, x.Params); err != nil {
		return Metadata{}, err
	}
	if err := validClient(x.Client); err != nil {
		return Metadata{}, err
	}
	t, err := s.tenant(ctx, tenantID)
	if err != nil {
		return Metadata{}, err
	}
	// The record as this caller found it: if another caller stores a token
	// for the same request while this one waits for the lock, that token
	// is the answer (one token call however many callers race).
	seenRev := uint64(0)
	if cur, err := s.store.GetIntegration(ctx, tenantID, id); err == nil {
		seenRev = cur.Revision
	}
	unlock, err := s.lock(ctx, tenantID, id)
	if err != nil {
		return Metadata{}, err
	}
	defer unlock()
	if cur, err := s.store.GetIntegration(ctx, tenantID, id); err == nil && cur.Revision != seenRev &&
		sameClientCredentials(cur, p.Name, scopes, x) && cur.Status == storage.StatusActive &&
		(cur.ExpiresAt.IsZero() || s.now().Before(cur.ExpiresAt)) {
		return s.metadata(cur), nil
	}
	ep, err := expandEndpoint(p.Endpoint, x.Params)
	if err != nil {
		return Metadata{}, err
	}
	ep = withClient(ep, x.Client)
	tok, gerr := s.ccGrant(ctx, ep, scopes)
	if gerr == nil && tok.AccessToken.Len() > MaxTokenBytes {
		gerr = errTokenTooLarge
	}
	// The provider answered (or not): what follows is recorded whatever the
	// caller does.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if gerr != nil {
		s.metrics.Refresh(p.Name, "client_credentials_failed")
		ev := c.event(audit.ActionTokenStore, tenantID, id, audit.OutcomeFailure, "client_credentials: "+safeReason(gerr))
		ev.TargetHost = hostOf(ep.TokenURL)
		if _, aerr := s.audit.Record(ctx, ev); aerr != nil {
			return Metadata{}, fmt.Errorf("%w: audit: %w", ErrUnavailable, aerr)
		}
		if isClientRejected(gerr) {
			return Metadata{}, ErrReauthorizationRequired
		}
		return Metadata{}, fmt.Errorf("%w: client credentials grant failed: %s", ErrUnavailable, safeReason(gerr))
	}
	now := s.now().UTC()
	granted := scopes
	if tok.Scope != nil {
		granted = tok.Scope
	}
	base, err := apiBaseFor(p, x.Params, tok)
	if err != nil {
		return Metadata{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	in := storage.Integration{
		ID: id, TenantID: tenantID, Provider: p.Name, Scopes: normScopes(granted),
		Status: storage.StatusActive, TokenType: tokenType(tok.TokenType),
		ExpiresAt: expiry(now, tok.ExpiresIn, p.DefaultLifetime), CreatedAt: now, UpdatedAt: now, StoredAt: now,
		LastRefreshAt: now, Grant: GrantClientCredentials, Params: cloneParams(x.Params), APIBaseURL: base,
	}
	if old, err := s.store.GetIntegration(ctx, tenantID, id); err == nil {
		in.CreatedAt = old.CreatedAt
	} else if !errors.Is(err, storage.ErrNotFound) {
		return Metadata{}, s.storeErr(err)
	}
	// A client-credentials integration never has a refresh token.
	if err := s.sealTokens(ctx, t, &in, tok.AccessToken, secret.String{}); err != nil {
		return Metadata{}, err
	}
	if in.Client, err = s.sealClient(ctx, t, id, x.Client); err != nil {
		return Metadata{}, err
	}
	var out storage.Integration
	ev := c.success(audit.ActionTokenStore, tenantID, id, "provider="+p.Name+" grant=client_credentials", opts)
	ev.TargetHost = hostOf(ep.TokenURL)
	_, err = s.audit.RecordWith(ctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		out, rec, err = s.store.PutIntegration(ctx, tenantID, in, build)
		return rec, err
	})
	if err != nil {
		return Metadata{}, s.storeErr(err)
	}
	s.metrics.Refresh(p.Name, "client_credentials")
	s.usage.forget(tenantID, id)
	return s.metadata(out), nil
}

// isClientRejected: the provider refused the client itself, so retrying
// cannot help until someone fixes the client (reauthorization_required).
func isClientRejected(err error) bool {
	var oe *oauth.Error
	if !errors.As(err, &oe) {
		return false
	}
	switch oe.Code {
	case "invalid_client", "unauthorized_client", "invalid_grant":
		return true
	}
	return false
}

// renewClientCredentials is refreshLocked for a client-credentials
// integration: a new token from the same grant, committed before the lock
// is released, exactly as a refresh.
func (s *Service) renewClientCredentials(ctx context.Context, c Caller, tenantID string, t storage.Tenant, in storage.Integration, p *Provider) (Lease, error) {
	sealer, err := s.keys.HoldCurrentDEK(ctx, t)
	if err != nil {
		return Lease{}, fmt.Errorf("%w: data key: %w", ErrUnavailable, err)
	}
	defer sealer.Release()
	stillValid := !in.ExpiresAt.IsZero() && s.now().Before(in.ExpiresAt)
	tok, gerr := s.ccGrant(ctx, p.Endpoint, in.Scopes)
	if gerr == nil && tok.AccessToken.Len() > MaxTokenBytes {
		gerr = errTokenTooLarge
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if gerr != nil {
		if isClientRejected(gerr) {
			s.metrics.Refresh(p.Name, "invalid_client")
			return Lease{}, s.markReauth(cctx, c, tenantID, in, p, safeReason(gerr))
		}
		s.metrics.Refresh(p.Name, "transient")
		return s.markDegraded(cctx, c, tenantID, in, p, gerr, stillValid)
	}
	s.metrics.Refresh(p.Name, "success")
	now := s.now().UTC()
	upd := in
	if tok.Scope != nil {
		upd.Scopes = normScopes(tok.Scope)
	}
	upd.ExpiresAt = expiry(now, tok.ExpiresIn, p.DefaultLifetime)
	upd.TokenType = tokenType(tok.TokenType)
	upd.Status = storage.StatusActive
	upd.ConsecutiveFailures = 0
	upd.LastError = ""
	upd.NextRefreshAt = time.Time{}
	upd.LastRefreshAt = now
	upd.UpdatedAt = now
	upd.RefreshCount++
	if err := sealTokensWith(&upd, tok.AccessToken, secret.String{}, func(field string, pt []byte) ([]byte, error) {
		return sealer.Seal(in.ID, field, pt)
	}); err != nil {
		return Lease{}, err
	}
	out, err := s.casAudited(cctx, tenantID, upd,
		tokenURLEvent(c, p, audit.ActionTokenRefresh, tenantID, in.ID, audit.OutcomeSuccess, "client_credentials"))
	if err != nil {
		return Lease{}, err
	}
	return Lease{Token: tok.AccessToken, TokenType: out.TokenType, Provider: p, Integration: out, Revision: out.Revision}, nil
}

// sameClientCredentials: in is a client-credentials integration obtained
// for the same provider, parameters and kind of client as x asks for, with
// the scopes asked for (when the provider echoed them).
func sameClientCredentials(in storage.Integration, provider string, scopes []string, x StoreExtras) bool {
	if in.Grant != GrantClientCredentials || in.Provider != provider || (x.Client == nil) != (len(in.Client) == 0) {
		return false
	}
	if !maps.Equal(in.Params, x.Params) && (len(in.Params) > 0 || len(x.Params) > 0) {
		return false
	}
	return slices.Equal(in.Scopes, normScopes(scopes))
}
