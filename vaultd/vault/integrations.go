package vault

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// StoreToken encrypts and persists tok for (tenant, integration). It
// replaces an existing integration (re-authorisation) and resets its state.
// The record and its token.store audit event commit in one transaction: a
// stored token always has its audit event, and the call costs one fsync.
func (s *Service) StoreToken(ctx context.Context, c Caller, tenantID, id, providerName string, tok oauth.Token, opts ...WriteOption) (Metadata, error) {
	return s.StoreTokenWith(ctx, c, tenantID, id, providerName, tok, StoreExtras{}, opts...)
}

// StoreTokenWith is StoreToken with a store body's optional parts: the
// template parameters that fix the integration's API base and a
// per-integration OAuth client, sealed like the tokens.
func (s *Service) StoreTokenWith(ctx context.Context, c Caller, tenantID, id, providerName string, tok oauth.Token, x StoreExtras, opts ...WriteOption) (Metadata, error) {
	if !storage.ValidID(id) {
		return Metadata{}, badRequest("invalid integration id")
	}
	p, ok := s.Provider(providerName)
	if !ok {
		return Metadata{}, badRequest("unknown provider")
	}
	if tok.AccessToken.IsZero() {
		return Metadata{}, badRequest("access_token is required")
	}
	if tok.AccessToken.Len() > MaxTokenBytes || tok.RefreshToken.Len() > MaxTokenBytes {
		return Metadata{}, badRequest(fmt.Sprintf("access_token and refresh_token are limited to %d bytes each", MaxTokenBytes))
	}
	if err := checkParams(p, x.Params); err != nil {
		return Metadata{}, err
	}
	if err := validClient(x.Client); err != nil {
		return Metadata{}, err
	}
	base, err := apiBaseFor(p, x.Params, tok)
	if err != nil {
		return Metadata{}, badRequest("the integration's API host cannot be fixed: give params, or a token with an allowed host")
	}
	t, err := s.tenant(ctx, tenantID)
	if err != nil {
		return Metadata{}, err
	}
	now := s.now().UTC()
	in := storage.Integration{
		APIBaseURL: base, Params: cloneParams(x.Params),
		ID: id, TenantID: tenantID, Provider: p.Name,
		Scopes: normScopes(tok.Scope), Status: storage.StatusActive,
		TokenType: tokenType(tok.TokenType),
		ExpiresAt: expiry(now, tok.ExpiresIn, p.DefaultLifetime),
		CreatedAt: now, UpdatedAt: now, StoredAt: now,
	}
	unlock, err := s.lock(ctx, tenantID, id)
	if err != nil {
		return Metadata{}, err
	}
	defer unlock()
	if old, err := s.store.GetIntegration(ctx, tenantID, id); err == nil {
		in.CreatedAt = old.CreatedAt
	} else if !errors.Is(err, storage.ErrNotFound) {
		return Metadata{}, s.storeErr(err)
	}
	if err := s.sealTokens(ctx, t, &in, tok.AccessToken, tok.RefreshToken); err != nil {
		return Metadata{}, err
	}
	if in.Client, err = s.sealClient(ctx, t, id, x.Client); err != nil {
		return Metadata{}, err
	}
	var out storage.Integration
	ev := c.success(audit.ActionTokenStore, tenantID, id, "provider="+SafeName(providerName), opts)
	_, err = s.audit.RecordWith(ctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		out, rec, err = s.store.PutIntegration(ctx, tenantID, in, build)
		return rec, err
	})
	if err != nil {
		return Metadata{}, s.storeErr(err)
	}
	s.usage.forget(tenantID, id)
	return s.metadata(out), nil
}

// GetIntegration returns metadata (never a token).
func (s *Service) GetIntegration(ctx context.Context, tenantID, id string) (Metadata, error) {
	in, err := s.get(ctx, tenantID, id)
	if err != nil {
		return Metadata{}, err
	}
	return s.metadata(in), nil
}

// ListIntegrations returns the tenant's integrations' metadata.
func (s *Service) ListIntegrations(ctx context.Context, tenantID string) ([]Metadata, error) {
	if _, err := s.tenant(ctx, tenantID); err != nil {
		if errors.Is(err, ErrNotFound) {
			return []Metadata{}, nil
		}
		return nil, err
	}
	ins, err := s.store.ListIntegrations(ctx, tenantID)
	if err != nil {
		return nil, s.storeErr(err)
	}
	out := make([]Metadata, 0, len(ins))
	for _, in := range ins {
		out = append(out, s.metadata(in))
	}
	return out, nil
}

// Disconnect revokes the integration's tokens at the provider (RFC 7009:
// refresh token first, since revoking it usually kills the access token
// too), deletes the record and forgets cached state. Revocation failure
// does not keep the record: the caller asked to disconnect, and a stored
// token is worse than an unrevoked one we no longer hold; the result says
// whether the provider confirmed. A token whose revocation failed is not
// forgotten either: it is queued, sealed under the KEK, and retried until
// the provider confirms or [lifecycle] revocation_retry_for passes
// (QueueRevocation, RetryRevocations).
//
// Once the lock is held the rest runs detached from ctx (bounded by the
// provider timeouts and commitTimeout): a token sent to the revocation
// endpoint must end with its token.revoke event, the record deleted and
// the integration.delete event, whatever the caller does meanwhile.
func (s *Service) Disconnect(ctx context.Context, c Caller, tenantID, id string, opts ...WriteOption) (revoked bool, err error) {
	return s.disconnectIf(ctx, c, tenantID, id, nil, opts...)
}

// disconnectIf is Disconnect with a guard run under the integration's
// lock on the record as it is then: a background disconnect (a sweep)
// decides on the record no caller can change meanwhile, so a user who
// reconnects at that moment keeps the new tokens. A guard error ends the
// call with nothing done.
func (s *Service) disconnectIf(ctx context.Context, c Caller, tenantID, id string, guard func(storage.Integration) error, opts ...WriteOption) (revoked bool, err error) {
	unlock, err := s.lock(ctx, tenantID, id)
	if err != nil {
		return false, err
	}
	defer unlock()
	in, err := s.get(ctx, tenantID, id)
	if err != nil {
		return false, err
	}
	if guard != nil {
		if err := guard(in); err != nil {
			return false, err
		}
	}
	t, err := s.tenant(ctx, tenantID)
	if err != nil {
		return false, err
	}
	p, hasProvider := s.Provider(in.Provider)
	if hasProvider {
		// Revoke with the client that got the token, at its endpoint.
		if p, err = s.forIntegration(ctx, t, in, p); err != nil {
			return false, err
		}
	}
	budget := commitTimeout
	if hasProvider {
		budget += 2 * (p.refreshBudget() - commitTimeout) // two revocation calls
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer cancel()
	revoked = false
	if hasProvider {
		if revoked, _, err = s.revokeTokens(ctx, c, t, in, p); err != nil {
			return false, err
		}
	}
	// The tokens may be revoked already: delete and audit in one
	// transaction (a record never disappears without its
	// integration.delete event), with time of its own for the commit.
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer ccancel()
	ev := c.success(audit.ActionIntegrationDelete, tenantID, id, fmt.Sprintf("revoked_at_provider=%t", revoked), opts)
	if _, err := s.audit.RecordWith(cctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		return s.store.DeleteIntegration(cctx, tenantID, id, build)
	}); err != nil {
		return false, s.storeErr(err)
	}
	s.usage.forget(tenantID, id)
	return revoked, nil
}

func (s *Service) sealTokens(ctx context.Context, t storage.Tenant, in *storage.Integration, access, refresh secret.String) error {
	return sealTokensWith(in, access, refresh, func(field string, pt []byte) ([]byte, error) {
		return s.keys.SealField(ctx, t, in.ID, field, pt)
	})
}

// sealTokensWith seals the access and (if any) refresh token into in.
func sealTokensWith(in *storage.Integration, access, refresh secret.String, seal func(field string, pt []byte) ([]byte, error)) error {
	ct, err := seal(fieldAccess, []byte(access.Reveal()))
	if err != nil {
		return fmt.Errorf("%w: seal: %w", ErrUnavailable, err)
	}
	in.AccessToken = ct
	in.RefreshToken = nil
	if !refresh.IsZero() {
		ct, err := seal(fieldRefresh, []byte(refresh.Reveal()))
		if err != nil {
			return fmt.Errorf("%w: seal: %w", ErrUnavailable, err)
		}
		in.RefreshToken = ct
	}
	return nil
}

// casAudited swaps upd in and commits evs with it, in one transaction: an
// integration's state never changes without its events.
func (s *Service) casAudited(ctx context.Context, tenantID string, upd storage.Integration, evs ...audit.Event) (storage.Integration, error) {
	var out storage.Integration
	_, err := s.audit.RecordAllWith(ctx, evs, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		out, rec, err = s.store.CompareAndSwapIntegration(ctx, tenantID, upd, build)
		return rec, err
	})
	if err != nil {
		return storage.Integration{}, s.storeErr(err)
	}
	return out, nil
}

// commitTimeout bounds the work after a provider answered a refresh. It runs
// detached from the caller: a caller that hangs up once the provider has
// rotated the refresh token must not stop the new one being stored.
const commitTimeout = 30 * time.Second

// get reads an integration of an app call: a disabled tenant's answers
// ErrTenantDisabled (s.tenant), a missing or foreign one ErrNotFound.
func (s *Service) get(ctx context.Context, tenantID, id string) (storage.Integration, error) {
	if !storage.ValidID(id) || !storage.ValidID(tenantID) {
		return storage.Integration{}, ErrNotFound
	}
	if _, err := s.tenant(ctx, tenantID); err != nil {
		return storage.Integration{}, err
	}
	in, err := s.store.GetIntegration(ctx, tenantID, id)
	if err != nil {
		return storage.Integration{}, s.storeErr(err)
	}
	return in, nil
}

func (s *Service) storeErr(err error) error {
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrTenantNotFound):
		return ErrNotFound
	case errors.Is(err, storage.ErrConflict):
		// Under the integration lock a conflict means something outside
		// this process wrote: refuse rather than guess.
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	default:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
}

func (s *Service) lock(ctx context.Context, tenantID, id string) (func(), error) {
	lctx, cancel := context.WithTimeout(ctx, s.lockTimeout)
	defer cancel()
	start := time.Now()
	unlock, err := s.locks.Lock(lctx, tenantID+"\x00"+id)
	s.metrics.LockWait(time.Since(start))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return unlock, nil
}
