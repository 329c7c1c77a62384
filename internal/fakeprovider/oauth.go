package fakeprovider

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// The token and revocation endpoints.

func newToken(prefix string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return prefix + hex.EncodeToString(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (p *Provider) oauthError(w http.ResponseWriter, status int, code, received string) {
	body := map[string]string{"error": code, "error_description": "oauthtest: " + code}
	p.mu.Lock()
	echo := p.echoTokens
	p.mu.Unlock()
	if echo && received != "" {
		body["error_description"] = "oauthtest: " + code + " for token " + received
		body["token_received"] = received
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="oauthtest"`)
	}
	writeJSON(w, status, body)
}

// clientAuth checks client authentication against the configured style
// and the registered clients; it answers the authenticated client id.
func (p *Provider) clientAuth(r *http.Request) (string, bool) {
	_, _, hasBasic := r.BasicAuth()
	hasBody := r.PostForm.Has("client_secret") || r.PostForm.Has("client_id")
	style := "none"
	switch {
	case hasBasic && hasBody:
		style = "both"
	case hasBasic:
		style = oauth.AuthStyleBasic
	case hasBody:
		style = oauth.AuthStyleBody
	}
	p.mu.Lock()
	p.lastAuthStyle = style
	p.mu.Unlock()
	if style != p.authStyle {
		return "", false
	}
	var id, sec string
	if style == oauth.AuthStyleBasic {
		// RFC 6749 §2.3.1: both parts are form-urlencoded inside Basic.
		u, s, _ := r.BasicAuth()
		var err1, err2 error
		id, err1 = url.QueryUnescape(u)
		sec, err2 = url.QueryUnescape(s)
		if err1 != nil || err2 != nil {
			return "", false
		}
	} else {
		id, sec = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	p.mu.Lock()
	want, known := p.clients[id]
	p.mu.Unlock()
	if !known || !secret.NewString(sec).Equal(secret.NewString(want)) {
		return "", false
	}
	return id, true
}

func (p *Provider) serveToken(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.refreshCount++
	delay := p.refreshDelay
	p.mu.Unlock()
	// Read the body before any delay: net/http notices a client hanging up
	// (and cancels r.Context()) only once the body has been consumed.
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
	if err := r.ParseForm(); err != nil {
		p.oauthError(w, http.StatusBadRequest, "invalid_request", "")
		return
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-p.closing:
			t.Stop()
			return
		}
	}
	grantType := r.PostForm.Get("grant_type")
	p.mu.Lock()
	switch grantType {
	case "authorization_code":
		p.codeExchanges++
	case "client_credentials":
		p.ccCount++
	}
	p.mu.Unlock()
	// What an echoing provider would echo: the grant's own secret.
	received := r.PostForm.Get("refresh_token")
	if grantType == "authorization_code" {
		received = r.PostForm.Get("code")
	}
	client, ok := p.clientAuth(r)
	if !ok {
		p.oauthError(w, http.StatusUnauthorized, "invalid_client", received)
		return
	}
	if p.injectedError(w, &p.nextRefreshErr, received) {
		return
	}
	var resp map[string]any
	var errCode string
	switch grantType {
	case "refresh_token":
		resp, errCode = p.refreshGrant(r, client, received)
	case "authorization_code":
		resp, errCode = p.codeGrant(r, client, received)
	case "client_credentials":
		resp, errCode = p.clientCredentialsGrant(r, client)
	default:
		errCode = "unsupported_grant_type"
	}
	if errCode != "" {
		p.oauthError(w, http.StatusBadRequest, errCode, received)
		return
	}
	if !p.wait(r, HoldToken) {
		return
	}
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
}

// refreshGrant is RFC 6749 §6 for client's refresh token received.
func (p *Provider) refreshGrant(r *http.Request, client, received string) (map[string]any, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.byRefresh[received]
	if !ok || g.client != client {
		return nil, "invalid_grant"
	}
	scopes := g.scopes
	if req := r.PostForm.Get("scope"); req != "" {
		scopes = strings.Fields(req)
		for _, s := range scopes {
			if !slices.Contains(g.scopes, s) {
				return nil, "invalid_scope"
			}
		}
	}
	if p.grantedScopes != nil {
		scopes = append([]string(nil), p.grantedScopes...)
		g.scopes = scopes
	}
	delete(p.byAccess, g.access)
	g.access = newToken(AccessTokenPrefix)
	p.byAccess[g.access] = g
	if p.rotate && !p.omitRefresh {
		delete(p.byRefresh, g.refresh)
		g.refresh = newToken(RefreshTokenPrefix)
		p.byRefresh[g.refresh] = g
	}
	resp := map[string]any{"access_token": g.access, "token_type": "Bearer"}
	if !p.omitRefresh {
		resp["refresh_token"] = g.refresh
	}
	if !p.omitExpiresIn {
		resp["expires_in"] = p.expiresIn
	}
	if !p.omitScope && len(scopes) > 0 {
		resp["scope"] = strings.Join(scopes, " ")
	}
	p.addExtraFields(resp)
	return resp, ""
}

// codeGrant is RFC 6749 §4.1.3 with RFC 7636 §4.6: the code is single use
// (a replay also revokes what the code bought, §4.1.2), bound to its
// client, redirect_uri and PKCE challenge, and lives CodeLifetime.
func (p *Provider) codeGrant(r *http.Request, client, code string) (map[string]any, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if g, replayed := p.usedCodes[code]; replayed {
		delete(p.byAccess, g.access)
		delete(p.byRefresh, g.refresh)
		return nil, "invalid_grant"
	}
	c, ok := p.codes[code]
	if !ok {
		return nil, "invalid_grant"
	}
	delete(p.codes, code) // one attempt per code, successful or not
	p.usedCodes[code] = &grant{}
	if !p.now().Before(c.expires) || c.client != client || r.PostForm.Get("redirect_uri") != c.redirectURI {
		return nil, "invalid_grant"
	}
	verifier, hasVerifier := r.PostForm.Get("code_verifier"), r.PostForm.Has("code_verifier")
	switch {
	case c.challenge == "" && hasVerifier:
		return nil, "invalid_request" // a verifier for a code issued without PKCE
	case c.challenge != "" && !validVerifier(verifier):
		return nil, "invalid_grant"
	case c.challenge != "" && s256(verifier) != c.challenge:
		return nil, "invalid_grant"
	}
	g := &grant{refresh: newToken(RefreshTokenPrefix), access: newToken(AccessTokenPrefix), scopes: c.scopes, client: client}
	p.byRefresh[g.refresh] = g
	p.byAccess[g.access] = g
	p.usedCodes[code] = g
	resp := map[string]any{"access_token": g.access, "token_type": "Bearer", "refresh_token": g.refresh, "expires_in": p.expiresIn}
	if len(g.scopes) > 0 {
		resp["scope"] = strings.Join(g.scopes, " ")
	}
	p.addExtraFields(resp)
	return resp, ""
}

// clientCredentialsGrant is RFC 6749 §4.4: an access token, no refresh
// token (§4.4.3), the requested scope.
func (p *Provider) clientCredentialsGrant(r *http.Request, client string) (map[string]any, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := &grant{access: newToken(AccessTokenPrefix), scopes: strings.Fields(r.PostForm.Get("scope")), client: client}
	p.byAccess[g.access] = g
	resp := map[string]any{"access_token": g.access, "token_type": "Bearer", "expires_in": p.expiresIn}
	if len(g.scopes) > 0 {
		resp["scope"] = strings.Join(g.scopes, " ")
	}
	return resp, ""
}

// addExtraFields adds SetExtraTokenFields' members; p.mu is held.
func (p *Provider) addExtraFields(resp map[string]any) {
	for k, v := range p.extraFields {
		if _, taken := resp[k]; !taken {
			resp[k] = v
		}
	}
}

// injectedError answers a one-shot injected error, if one is set.
func (p *Provider) injectedError(w http.ResponseWriter, slot **injected, received string) bool {
	p.mu.Lock()
	inj := *slot
	*slot = nil
	p.mu.Unlock()
	if inj == nil {
		return false
	}
	if inj.raw != nil {
		if inj.contentType != "" {
			w.Header().Set("Content-Type", inj.contentType)
		}
		w.WriteHeader(inj.status)
		_, _ = w.Write(inj.raw)
		return true
	}
	p.oauthError(w, inj.status, inj.code, received)
	return true
}

func (p *Provider) serveRevoke(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
	if err := r.ParseForm(); err != nil {
		p.oauthError(w, http.StatusBadRequest, "invalid_request", "")
		return
	}
	tok := r.PostForm.Get("token")
	if _, ok := p.clientAuth(r); !ok {
		p.oauthError(w, http.StatusUnauthorized, "invalid_client", tok)
		return
	}
	if p.injectedError(w, &p.nextRevokeErr, tok) {
		return
	}
	if tok == "" {
		p.oauthError(w, http.StatusBadRequest, "invalid_request", "")
		return
	}
	p.mu.Lock()
	p.revoked = append(p.revoked, tok)
	if g, ok := p.byRefresh[tok]; ok { // RFC 7009 §2.1: the grant's access token goes too
		delete(p.byRefresh, tok)
		delete(p.byAccess, g.access)
	}
	delete(p.byAccess, tok)
	p.mu.Unlock()
	if !p.wait(r, HoldRevoke) {
		return
	}
	w.WriteHeader(http.StatusOK) // also for unknown tokens (RFC 7009 §2.2)
}
