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

// clientAuth checks client authentication against the configured style.
func (p *Provider) clientAuth(r *http.Request) bool {
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
		return false
	}
	var id, sec string
	if style == oauth.AuthStyleBasic {
		// RFC 6749 §2.3.1: both parts are form-urlencoded inside Basic.
		u, s, _ := r.BasicAuth()
		var err1, err2 error
		id, err1 = url.QueryUnescape(u)
		sec, err2 = url.QueryUnescape(s)
		if err1 != nil || err2 != nil {
			return false
		}
	} else {
		id, sec = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	return id == p.clientID && secret.NewString(sec).Equal(secret.NewString(p.clientSecret))
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
	received := r.PostForm.Get("refresh_token")
	if !p.clientAuth(r) {
		p.oauthError(w, http.StatusUnauthorized, "invalid_client", received)
		return
	}
	if p.injectedError(w, &p.nextRefreshErr, received) {
		return
	}
	if r.PostForm.Get("grant_type") != "refresh_token" {
		p.oauthError(w, http.StatusBadRequest, "unsupported_grant_type", received)
		return
	}

	p.mu.Lock()
	g, ok := p.byRefresh[received]
	if !ok {
		p.mu.Unlock()
		p.oauthError(w, http.StatusBadRequest, "invalid_grant", received)
		return
	}
	scopes := g.scopes
	if req := r.PostForm.Get("scope"); req != "" {
		scopes = strings.Fields(req)
		for _, s := range scopes {
			if !slices.Contains(g.scopes, s) {
				p.mu.Unlock()
				p.oauthError(w, http.StatusBadRequest, "invalid_scope", received)
				return
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
	p.mu.Unlock()
	if !p.wait(r, HoldToken) {
		return
	}
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
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
	if !p.clientAuth(r) {
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
