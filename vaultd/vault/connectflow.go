package vault

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/catalog"
	"github.com/vaultd/vaultd/vaultd/envelope"
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
//
// Everything that needs the HSM or the integration's lock is made ready
// before the state is spent: once the code has been exchanged, the only
// failures left are the commit's.
func (s *Service) ConnectCallback(ctx context.Context, requestID, rawQuery string, cookie func(sessionID string) (string, bool)) (CallbackResult, error) {
	cfg := s.connect.Load()
	if cfg == nil {
		return CallbackResult{}, ErrConnectDisabled
	}
	anon := Caller{Principal: BrowserActor, RequestID: requestID}
	cb, err := oauth.ParseCallback(rawQuery)
	if err != nil {
		s.denyAnonymous(ctx, anon, "malformed callback")
		return CallbackResult{}, ErrConnectLinkInvalid
	}
	d := digest(cb.State.Reveal())
	cs, err := s.store.FindConnectSession(ctx, d)
	if errors.Is(err, storage.ErrNotFound) {
		s.denyAnonymous(ctx, anon, "unknown state")
		return CallbackResult{}, ErrConnectLinkInvalid
	}
	if err != nil {
		return CallbackResult{}, s.storeErr(err)
	}
	c := sessionCaller(cs, requestID)
	if subtle.ConstantTimeCompare(cs.StateHash, d) != 1 {
		// A link secret presented as a state.
		s.denyAnonymous(ctx, anon, "unknown state")
		return CallbackResult{}, ErrConnectLinkInvalid
	}
	switch {
	case cs.StateUsed || cs.Status != storage.ConnectPending:
		// A replay (or a reload): the state was spent by the first callback.
		s.denySession(ctx, c, cs, "state already used")
		return CallbackResult{}, ErrConnectFinished
	case !s.now().Before(cs.ExpiresAt):
		s.denySession(ctx, c, cs, "expired")
		return CallbackResult{}, ErrConnectExpired
	}
	v, ok := cookie(cs.ID)
	if !ok || !validLinkSecret(v) || subtle.ConstantTimeCompare(digest(v), cs.BrowserHash) != 1 {
		// Not the browser that opened the link (login CSRF, a leaked
		// callback URL): refused, and the session stays open for the
		// right browser.
		s.denySession(ctx, c, cs, "callback from another browser")
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
		code := oauthErrorCode(cb.Error)
		return s.failSession(ctx, c, cs, code, "provider answered "+code, audit.OutcomeFailure, "")
	}
	prep, err := s.prepareFinish(ctx, cs, p)
	if err != nil {
		// Nothing was spent: the browser may try the callback again.
		return CallbackResult{}, err
	}
	defer prep.release()
	// Spend the state before the code is used: a replay (or a second tab)
	// is refused from now on, whatever happens next.
	upd := cs
	upd.StateUsed = true
	upd.UpdatedAt = s.now().UTC()
	ev := c.event(audit.ActionConnectCallback, cs.TenantID, cs.IntegrationID, audit.OutcomeSuccess, "connect_session="+cs.ID)
	_, err = s.audit.RecordWith(ctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		upd, rec, err = s.store.UpdateConnectSession(ctx, upd, build)
		return rec, err
	})
	if errors.Is(err, storage.ErrConflict) || errors.Is(err, storage.ErrNotFound) {
		s.denySession(ctx, c, cs, "state already used")
		return CallbackResult{}, ErrConnectFinished
	}
	if err != nil {
		return CallbackResult{}, s.storeErr(err)
	}
	// The code is single use: from here the flow runs to its end whatever
	// the browser does, bounded.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.refreshBudget())
	defer cancel()
	return s.finishConnect(ctx, c, cfg, upd, p, cb.Code, prep)
}

// finishPrep is what a callback holds before it spends the state: the
// tenant, the opened verifier and client, the DEK the tokens will be
// sealed with (no HSM call after the exchange) and the integration's lock.
type finishPrep struct {
	t        storage.Tenant
	verifier secret.String
	client   *OAuthClient
	sealer   *envelope.Sealer
	unlock   func()
}

func (f *finishPrep) release() {
	f.sealer.Release()
	f.unlock()
}

func (s *Service) prepareFinish(ctx context.Context, cs storage.ConnectSession, p *Provider) (*finishPrep, error) {
	t, err := s.tenant(ctx, cs.TenantID)
	if err != nil {
		return nil, fmt.Errorf("%w: tenant: %w", ErrUnavailable, err)
	}
	f := &finishPrep{t: t}
	if len(cs.Verifier) > 0 {
		b, err := s.keys.OpenField(ctx, t, cs.ID, fieldVerifier, cs.Verifier)
		if err != nil {
			return nil, fmt.Errorf("%w: open verifier: %w", ErrUnavailable, err)
		}
		f.verifier = secret.NewString(string(b.Reveal()))
		b.Wipe()
	}
	if f.client, err = s.openClient(ctx, t, cs.ID, cs.Client); err != nil {
		return nil, err
	}
	if f.sealer, err = s.keys.HoldCurrentDEK(ctx, t); err != nil {
		return nil, fmt.Errorf("%w: data key: %w", ErrUnavailable, err)
	}
	if f.unlock, err = s.lock(ctx, cs.TenantID, cs.IntegrationID); err != nil {
		f.sealer.Release()
		return nil, err
	}
	return f, nil
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
// completion, or fails the session. Tokens the provider issued but vaultd
// cannot keep are revoked (best effort), so no live grant is left behind.
func (s *Service) finishConnect(ctx context.Context, c Caller, cfg *ConnectSettings, cs storage.ConnectSession, p *Provider, code secret.String, prep *finishPrep) (CallbackResult, error) {
	ep, err := expandEndpoint(p.Endpoint, cs.Params)
	if err != nil {
		return s.failSession(ctx, c, cs, "server_error", "token endpoint unavailable", audit.OutcomeFailure, "")
	}
	ep = withClient(ep, prep.client)
	tokenHost := hostOf(ep.TokenURL)
	tok, err := s.exchange(ctx, ep, code, cfg.RedirectURI, prep.verifier)
	if err == nil && (tok.AccessToken.Len() > MaxTokenBytes || tok.RefreshToken.Len() > MaxTokenBytes) {
		s.revokeUnkept(ctx, ep, tok)
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
		s.revokeUnkept(ctx, ep, tok)
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
		ExpiresAt: expiry(now, tok.ExpiresIn, p.DefaultLifetime), CreatedAt: now, UpdatedAt: now, StoredAt: now,
		APIBaseURL: base, Params: cloneParams(cs.Params), ConnectSession: cs.ID,
	}
	if old, err := s.store.GetIntegration(ctx, cs.TenantID, cs.IntegrationID); err == nil {
		in.CreatedAt = old.CreatedAt
	}
	seal := func(field string, pt []byte) ([]byte, error) { return prep.sealer.Seal(in.ID, field, pt) }
	err = sealTokensWith(&in, tok.AccessToken, tok.RefreshToken, seal)
	if err == nil && prep.client != nil {
		in.Client, err = sealClientWith(prep.client, seal)
	}
	if err != nil {
		s.revokeUnkept(ctx, ep, tok)
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
		s.revokeUnkept(ctx, ep, tok)
		return s.failSession(ctx, c, cs, "server_error", "store failed", audit.OutcomeFailure, "")
	}
	s.usage.forget(cs.TenantID, cs.IntegrationID)
	return CallbackResult{Location: returnLocation(cs, storage.ConnectCompleted, ""), SessionID: cs.ID, Status: storage.ConnectCompleted}, nil
}

// revokeUnkept revokes, best effort, tokens a provider issued that vaultd
// will not store (refresh token first, RFC 7009): a grant nobody holds
// must not stay live at the provider.
func (s *Service) revokeUnkept(ctx context.Context, ep oauth.Endpoint, tok oauth.Token) {
	if ep.RevocationURL == "" {
		return
	}
	for _, t := range []struct {
		v    secret.String
		hint string
	}{{tok.RefreshToken, "refresh_token"}, {tok.AccessToken, "access_token"}} {
		if t.v.IsZero() {
			continue
		}
		if err := s.revoke(ctx, ep, t.v, t.hint); err != nil {
			s.log.WarnContext(ctx, "could not revoke a token vaultd did not keep", "hint", t.hint, "reason", safeReason(err))
		}
	}
}

// failSession ends cs as failed with an OAuth error code (shown to the
// application in return_to) and a connect.fail event; the browser goes to
// return_to.
func (s *Service) failSession(ctx context.Context, c Caller, cs storage.ConnectSession, code, reason, outcome, targetHost string) (CallbackResult, error) {
	code = oauthErrorCode(code)
	upd := cs
	upd.Status = storage.ConnectFailed
	upd.Error = code
	upd.StateUsed = true
	upd.BrowserHash, upd.Verifier, upd.Client = nil, nil, nil
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

// denySession audits a refused callback that names a session
// (connect.fail, denied), at most maxSessionDenials times per session:
// whoever holds a state can repeat it, and the trail must not become the
// place that repetition fills.
func (s *Service) denySession(ctx context.Context, c Caller, cs storage.ConnectSession, why string) {
	if !s.denials.allowSession(cs.ID) {
		return
	}
	s.recordDenial(ctx, c.event(audit.ActionConnectFail, cs.TenantID, cs.IntegrationID, audit.OutcomeDenied,
		"connect_session="+cs.ID+": "+why))
}

// denyAnonymous audits a refused callback that names no session. Anyone
// can send those, so at most anonDenialsPerSecond are written each second;
// the next one written says how many were left out.
func (s *Service) denyAnonymous(ctx context.Context, c Caller, why string) {
	ok, suppressed := s.denials.allowAnonymous(s.now())
	if !ok {
		return
	}
	detail := why
	if suppressed > 0 {
		detail = fmt.Sprintf("%s (and %d more refused callbacks not recorded one by one)", why, suppressed)
	}
	s.recordDenial(ctx, c.event(audit.ActionConnectFail, "", "", audit.OutcomeDenied, detail))
}

func (s *Service) recordDenial(ctx context.Context, ev audit.Event) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if _, err := s.audit.Record(actx, ev); err != nil {
		s.log.ErrorContext(ctx, "could not audit a refused connect callback", "err", errorKind(err))
	}
}

// Bounds of the refused-callback audit.
const (
	maxSessionDenials    = 5
	anonDenialsPerSecond = 10
	maxTrackedSessions   = 10000
)

// denialLimiter bounds the audit events refused callbacks write.
type denialLimiter struct {
	mu         sync.Mutex
	perSession map[string]int
	second     int64
	inSecond   int
	suppressed int
}

func (d *denialLimiter) allowSession(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.perSession == nil || len(d.perSession) >= maxTrackedSessions {
		// Bounded memory: forgetting the counts only allows a few more
		// events per session.
		d.perSession = map[string]int{}
	}
	d.perSession[id]++
	return d.perSession[id] <= maxSessionDenials
}

func (d *denialLimiter) allowAnonymous(now time.Time) (ok bool, suppressed int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if sec := now.Unix(); sec != d.second {
		d.second, d.inSecond = sec, 0
	}
	if d.inSecond >= anonDenialsPerSecond {
		d.suppressed++
		return false, 0
	}
	d.inSecond++
	suppressed, d.suppressed = d.suppressed, 0
	return true, suppressed
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
