package vault

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/catalog"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// BrowserActor is the actor of events about browser requests that name no
// session (a callback with an unknown state): the connect listener has no
// client certificate, so nobody is authenticated.
const BrowserActor = "anonymous-browser"

// LinkOpened is what the connect listener needs to send a browser on.
type LinkOpened struct {
	// Location is the provider's authorization URL (it carries the state:
	// it goes to this browser's Location header and nowhere else).
	Location  string
	SessionID string
	// Cookie binds this browser to the state; ExpiresAt is the session's.
	Cookie    secret.String
	ExpiresAt time.Time
}

// OpenConnectLink consumes a session's one-time link and prepares the
// authorization request: a fresh state and PKCE verifier, stored as a
// digest and sealed, and the browser-binding cookie's digest. The link
// works once, before the session expires.
func (s *Service) OpenConnectLink(ctx context.Context, requestID, link string) (LinkOpened, error) {
	cfg := s.connect.Load()
	if cfg == nil {
		return LinkOpened{}, ErrConnectDisabled
	}
	if !validLinkSecret(link) {
		return LinkOpened{}, ErrConnectLinkInvalid
	}
	d := digest(link)
	cs, err := s.store.FindConnectSession(ctx, d)
	if errors.Is(err, storage.ErrNotFound) {
		return LinkOpened{}, ErrConnectLinkInvalid
	}
	if err != nil {
		return LinkOpened{}, s.storeErr(err)
	}
	if subtle.ConstantTimeCompare(cs.LinkHash, d) != 1 {
		// The digest matched the session's state, not its link.
		return LinkOpened{}, ErrConnectLinkInvalid
	}
	switch {
	case cs.Status != storage.ConnectPending:
		return LinkOpened{}, ErrConnectLinkUsed
	case !s.now().Before(cs.ExpiresAt):
		return LinkOpened{}, ErrConnectExpired
	}
	p, ok := s.Provider(cs.Provider)
	if !ok || p.AuthorizationURL == "" {
		return LinkOpened{}, ErrConnectDisabled
	}
	t, err := s.tenant(ctx, cs.TenantID)
	if err != nil {
		return LinkOpened{}, err
	}
	state, err := oauth.NewState()
	if err != nil {
		return LinkOpened{}, fmt.Errorf("%w: state: %w", ErrUnavailable, err)
	}
	cookie, err := randomToken(32)
	if err != nil {
		return LinkOpened{}, err
	}
	upd := cs
	upd.LinkHash = nil
	upd.StateHash = digest(state.Reveal())
	upd.BrowserHash = digest(cookie)
	upd.UpdatedAt = s.now().UTC()
	var challenge string
	if p.PKCE {
		verifier, ch, err := oauth.NewPKCE()
		if err != nil {
			return LinkOpened{}, fmt.Errorf("%w: pkce: %w", ErrUnavailable, err)
		}
		challenge = ch
		if upd.Verifier, err = s.keys.SealField(ctx, t, cs.ID, fieldVerifier, []byte(verifier.Reveal())); err != nil {
			return LinkOpened{}, fmt.Errorf("%w: seal verifier: %w", ErrUnavailable, err)
		}
	}
	client, err := s.openClient(ctx, t, cs.ID, cs.Client)
	if err != nil {
		return LinkOpened{}, err
	}
	authURL, err := catalog.Expand(p.AuthorizationURL, cs.Params)
	if err != nil {
		return LinkOpened{}, fmt.Errorf("%w: authorization_url: %w", ErrUnavailable, err)
	}
	clientID := p.Endpoint.ClientID
	if client != nil {
		clientID = client.ClientID
	}
	loc, err := oauth.AuthorizeURL(oauth.AuthorizeRequest{
		AuthorizationURL: authURL, ClientID: clientID, RedirectURI: cfg.RedirectURI,
		Scopes: cs.Scopes, ScopeSeparator: p.Endpoint.ScopeSeparator, State: state,
		CodeChallenge: challenge, Extra: p.AuthorizeParams,
	})
	if err != nil {
		return LinkOpened{}, fmt.Errorf("%w: authorization request: %w", ErrUnavailable, err)
	}
	ev := sessionCaller(cs, requestID).event(audit.ActionConnectOpen, cs.TenantID, cs.IntegrationID, audit.OutcomeSuccess,
		"connect_session="+cs.ID)
	ev.TargetHost = hostOf(authURL)
	_, err = s.audit.RecordWith(ctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		upd, rec, err = s.store.UpdateConnectSession(ctx, upd, build)
		return rec, err
	})
	if errors.Is(err, storage.ErrConflict) {
		// Another browser opened the same link a moment before.
		return LinkOpened{}, ErrConnectLinkUsed
	}
	if err != nil {
		return LinkOpened{}, s.storeErr(err)
	}
	return LinkOpened{Location: loc, SessionID: cs.ID, Cookie: secret.NewString(cookie), ExpiresAt: cs.ExpiresAt}, nil
}

// CallbackResult says where the browser goes after a callback that named a
// session it may finish: return_to with connect_session, status and, on
// failure, error added.
type CallbackResult struct {
	Location  string
	SessionID string
	Status    string
}

// ConnectCallback handles the provider's redirect back. cookie returns the
// binding cookie the browser sent for a session id. Refusals (an unknown,
// used or expired state, another browser) are errors, audited
// connect.fail denied, and leave the session as it was; a provider error
// or a failed exchange fails the session and sends the browser to
// return_to.
func (s *Service) ConnectCallback(ctx context.Context, requestID, rawQuery string, cookie func(sessionID string) (string, bool)) (CallbackResult, error) {
	cfg := s.connect.Load()
	if cfg == nil {
		return CallbackResult{}, ErrConnectDisabled
	}
	anon := Caller{Principal: BrowserActor, RequestID: requestID}
	cb, err := oauth.ParseCallback(rawQuery)
	if err != nil {
		s.denyCallback(ctx, anon, "", "", "malformed callback")
		return CallbackResult{}, ErrConnectLinkInvalid
	}
	d := digest(cb.State.Reveal())
	cs, err := s.store.FindConnectSession(ctx, d)
	if errors.Is(err, storage.ErrNotFound) {
		s.denyCallback(ctx, anon, "", "", "unknown or used state")
		return CallbackResult{}, ErrConnectLinkInvalid
	}
	if err != nil {
		return CallbackResult{}, s.storeErr(err)
	}
	c := sessionCaller(cs, requestID)
	if subtle.ConstantTimeCompare(cs.StateHash, d) != 1 {
		// A link secret presented as a state.
		s.denyCallback(ctx, anon, "", "", "unknown or used state")
		return CallbackResult{}, ErrConnectLinkInvalid
	}
	switch {
	case cs.Status != storage.ConnectPending:
		s.denyCallback(ctx, c, cs.TenantID, cs.IntegrationID, "connect_session="+cs.ID+" already finished")
		return CallbackResult{}, ErrConnectFinished
	case !s.now().Before(cs.ExpiresAt):
		s.denyCallback(ctx, c, cs.TenantID, cs.IntegrationID, "connect_session="+cs.ID+" expired")
		return CallbackResult{}, ErrConnectExpired
	}
	v, ok := cookie(cs.ID)
	if !ok || !validLinkSecret(v) || subtle.ConstantTimeCompare(digest(v), cs.BrowserHash) != 1 {
		// Not the browser that opened the link (login CSRF, a leaked
		// callback URL): refused, and the session stays open for the
		// right browser.
		s.denyCallback(ctx, c, cs.TenantID, cs.IntegrationID, "connect_session="+cs.ID+" callback from another browser")
		return CallbackResult{}, ErrConnectDenied
	}
	p, ok := s.Provider(cs.Provider)
	if !ok || p.AuthorizationURL == "" {
		return s.failSession(ctx, c, cs, "server_error", "provider no longer configured", audit.OutcomeFailure, "")
	}
	if err := checkIssuer(p, cs.Params, cb); err != nil {
		// RFC 9207: a response from another authorization server
		// (mix-up) is refused and the session ends.
		return s.failSession(ctx, c, cs, "invalid_request", "issuer mismatch", audit.OutcomeDenied, "")
	}
	if cb.Error != "" {
		return s.failSession(ctx, c, cs, cb.Error, "provider answered "+cb.Error, audit.OutcomeFailure, "")
	}
	// Consume the state before the code is used: a replay (or a second
	// tab) now finds nothing, whatever happens next.
	upd := cs
	upd.StateHash = nil
	upd.UpdatedAt = s.now().UTC()
	ev := c.event(audit.ActionConnectCallback, cs.TenantID, cs.IntegrationID, audit.OutcomeSuccess, "connect_session="+cs.ID)
	_, err = s.audit.RecordWith(ctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		upd, rec, err = s.store.UpdateConnectSession(ctx, upd, build)
		return rec, err
	})
	if errors.Is(err, storage.ErrConflict) || errors.Is(err, storage.ErrNotFound) {
		s.denyCallback(ctx, c, cs.TenantID, cs.IntegrationID, "connect_session="+cs.ID+" state already used")
		return CallbackResult{}, ErrConnectLinkInvalid
	}
	if err != nil {
		return CallbackResult{}, s.storeErr(err)
	}
	// The code is single use and the exchange may rotate nothing back: from
	// here the flow runs to its end whatever the browser does, bounded.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.refreshBudget())
	defer cancel()
	return s.finishConnect(ctx, c, cfg, upd, p, cb.Code)
}

// checkIssuer applies RFC 9207: when the provider sends iss it must be the
// configured issuer or, without one, have the authorization endpoint's
// origin; a configured issuer also requires it.
func checkIssuer(p *Provider, params map[string]string, cb oauth.Callback) error {
	if p.Issuer != "" {
		return oauth.CheckIssuer(cb, p.Issuer, true)
	}
	if cb.Iss == "" {
		return nil
	}
	authURL, err := catalog.Expand(p.AuthorizationURL, params)
	if err != nil {
		return err
	}
	if o := originOf(cb.Iss); o == "" || o != originOf(authURL) {
		return errors.New("vault: issuer mismatch")
	}
	return nil
}

// finishConnect exchanges the code and stores the token with the session's
// completion, or fails the session.
func (s *Service) finishConnect(ctx context.Context, c Caller, cfg *ConnectSettings, cs storage.ConnectSession, p *Provider, code secret.String) (CallbackResult, error) {
	t, err := s.tenant(ctx, cs.TenantID)
	if err != nil {
		return s.failSession(ctx, c, cs, "server_error", "tenant unavailable", audit.OutcomeFailure, "")
	}
	var verifier secret.String
	if len(cs.Verifier) > 0 {
		b, err := s.keys.OpenField(ctx, t, cs.ID, fieldVerifier, cs.Verifier)
		if err != nil {
			return s.failSession(ctx, c, cs, "server_error", "verifier unavailable", audit.OutcomeFailure, "")
		}
		verifier = secret.NewString(string(b.Reveal()))
		b.Wipe()
	}
	client, err := s.openClient(ctx, t, cs.ID, cs.Client)
	if err != nil {
		return s.failSession(ctx, c, cs, "server_error", "client unavailable", audit.OutcomeFailure, "")
	}
	ep, err := expandEndpoint(p.Endpoint, cs.Params)
	if err != nil {
		return s.failSession(ctx, c, cs, "server_error", "token endpoint unavailable", audit.OutcomeFailure, "")
	}
	ep = withClient(ep, client)
	tokenHost := hostOf(ep.TokenURL)
	tok, err := s.exchange(ctx, ep, code, cfg.RedirectURI, verifier)
	if err == nil && (tok.AccessToken.Len() > MaxTokenBytes || tok.RefreshToken.Len() > MaxTokenBytes) {
		err = errTokenTooLarge
	}
	if err != nil {
		codeOut := "server_error"
		var oe *oauth.Error
		if errors.As(err, &oe) && oe.Code != "" {
			codeOut = oe.Code
		}
		s.log.WarnContext(ctx, "connect code exchange failed", "tenant_id", cs.TenantID, "integration_id", cs.IntegrationID,
			"connect_session", cs.ID, "provider", p.Name, "reason", safeReason(err))
		return s.failSession(ctx, c, cs, codeOut, "exchange failed: "+safeReason(err), audit.OutcomeFailure, tokenHost)
	}
	base, err := apiBaseFor(p, cs.Params, tok)
	if err != nil {
		// A token response naming a host outside the template's allowed
		// hosts is hostile or broken: the token is not kept.
		s.log.WarnContext(ctx, "connect refused the token response's API host", "tenant_id", cs.TenantID,
			"integration_id", cs.IntegrationID, "connect_session", cs.ID, "provider", p.Name)
		return s.failSession(ctx, c, cs, "server_error", "api host refused", audit.OutcomeDenied, tokenHost)
	}
	now := s.now().UTC()
	scopes := cs.Scopes
	if tok.Scope != nil {
		scopes = tok.Scope
	}
	in := storage.Integration{
		ID: cs.IntegrationID, TenantID: cs.TenantID, Provider: p.Name,
		Scopes: normScopes(scopes), Status: storage.StatusActive, TokenType: tokenType(tok.TokenType),
		ExpiresAt: expiry(now, tok.ExpiresIn, p.DefaultLifetime), CreatedAt: now, UpdatedAt: now,
		APIBaseURL: base, Params: cloneParams(cs.Params), ConnectSession: cs.ID,
	}
	unlock, err := s.lock(ctx, cs.TenantID, cs.IntegrationID)
	if err != nil {
		return s.failSession(ctx, c, cs, "server_error", "integration busy", audit.OutcomeFailure, "")
	}
	defer unlock()
	if old, err := s.store.GetIntegration(ctx, cs.TenantID, cs.IntegrationID); err == nil {
		in.CreatedAt = old.CreatedAt
	}
	if err := s.sealTokens(ctx, t, &in, tok.AccessToken, tok.RefreshToken); err != nil {
		return s.failSession(ctx, c, cs, "server_error", "seal failed", audit.OutcomeFailure, "")
	}
	if in.Client, err = s.sealClient(ctx, t, in.ID, client); err != nil {
		return s.failSession(ctx, c, cs, "server_error", "seal failed", audit.OutcomeFailure, "")
	}
	done := cs
	done.Status = storage.ConnectCompleted
	done.BrowserHash, done.Verifier, done.Client = nil, nil, nil
	done.UpdatedAt = now
	ev := c.event(audit.ActionTokenStore, cs.TenantID, cs.IntegrationID, audit.OutcomeSuccess,
		fmt.Sprintf("provider=%s connect_session=%s", p.Name, cs.ID))
	ev.TargetHost = tokenHost
	_, err = s.audit.RecordWith(ctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		done, _, rec, err = s.store.CompleteConnectSession(ctx, done, in, build)
		return rec, err
	})
	if err != nil {
		s.log.ErrorContext(ctx, "connect could not store the token", "tenant_id", cs.TenantID, "integration_id", cs.IntegrationID,
			"connect_session", cs.ID, "err", errorKind(err))
		return s.failSession(ctx, c, cs, "server_error", "store failed", audit.OutcomeFailure, "")
	}
	s.usage.forget(cs.TenantID, cs.IntegrationID)
	return CallbackResult{Location: returnLocation(cs, storage.ConnectCompleted, ""), SessionID: cs.ID, Status: storage.ConnectCompleted}, nil
}

// failSession ends cs as failed with an OAuth error code (shown to the
// application in return_to) and a connect.fail event; the browser goes to
// return_to.
func (s *Service) failSession(ctx context.Context, c Caller, cs storage.ConnectSession, code, reason, outcome, targetHost string) (CallbackResult, error) {
	code = oauthErrorCode(code)
	upd := cs
	upd.Status = storage.ConnectFailed
	upd.Error = code
	upd.StateHash, upd.BrowserHash, upd.Verifier, upd.Client = nil, nil, nil, nil
	upd.UpdatedAt = s.now().UTC()
	ev := c.event(audit.ActionConnectFail, cs.TenantID, cs.IntegrationID, outcome,
		fmt.Sprintf("connect_session=%s error=%s: %s", cs.ID, code, reason))
	ev.TargetHost = targetHost
	_, err := s.audit.RecordWith(ctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		upd, rec, err = s.store.UpdateConnectSession(ctx, upd, build)
		return rec, err
	})
	if errors.Is(err, storage.ErrConflict) {
		return CallbackResult{}, ErrConnectLinkInvalid
	}
	if err != nil {
		return CallbackResult{}, s.storeErr(err)
	}
	return CallbackResult{Location: returnLocation(cs, storage.ConnectFailed, code), SessionID: cs.ID, Status: storage.ConnectFailed}, nil
}

// denyCallback audits a refused callback (connect.fail, denied); the
// answer does not wait on it failing: nothing was stored.
func (s *Service) denyCallback(ctx context.Context, c Caller, tenantID, integrationID, detail string) {
	ev := c.event(audit.ActionConnectFail, tenantID, integrationID, audit.OutcomeDenied, detail)
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if _, err := s.audit.Record(actx, ev); err != nil {
		s.log.ErrorContext(ctx, "could not audit a refused connect callback", "err", errorKind(err))
	}
}

// oauthErrorCode keeps an RFC 6749 error code as the application may see
// it in return_to: the provider chose it, so anything outside the code's
// charset or long becomes server_error.
func oauthErrorCode(code string) string {
	if code == "" || len(code) > 64 {
		return "server_error"
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return "server_error"
		}
	}
	return code
}

// returnLocation is the session's return_to with connect_session, status
// and error set in its query (replacing any of those the application put
// there). Nothing secret goes in.
func returnLocation(cs storage.ConnectSession, status, code string) string {
	u, err := url.Parse(cs.ReturnTo)
	if err != nil {
		return ""
	}
	q := u.Query()
	q.Set("connect_session", cs.ID)
	q.Set("status", status)
	q.Del("error")
	if code != "" {
		q.Set("error", code)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// errorKind names an error's type for logs: store and HSM errors may wrap
// text from outside.
func errorKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, storage.ErrConflict):
		return "conflict"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		return strings.TrimPrefix(fmt.Sprintf("%T", errors.Unwrap(err)), "*")
	}
}
