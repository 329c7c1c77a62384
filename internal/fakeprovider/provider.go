// Package fakeprovider is an in-process fake OAuth 2.0 provider and
// resource API: a token endpoint (refresh_token grant, RFC 6749 §6) that
// asserts the configured client authentication style, a revocation endpoint
// (RFC 7009) that records what it revoked, and an API under /api/ that
// requires the current access token and echoes what it received. Knobs make
// it misbehave on demand (error answers, omitted members, delays, reflected
// tokens, redirects). Every knob and observer is safe for concurrent use.
//
// Tests use it through vaultd/oauth/oauthtest, whose New ties a started
// provider to a test; the dev-only stand-in provider (cmd/vaultd-devprovider)
// serves its Handler. It does not import the testing package, so a binary
// built on it does not link it either.
//
// Tokens it issues are random and carry the prefixes "oauthtest-at-" and
// "oauthtest-rt-", so leaks are easy to search for.
package fakeprovider

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// Defaults for Config's zero values.
const (
	DefaultClientID     = "oauthtest-client"
	DefaultClientSecret = "oauthtest-secret: not+a/real?one"
	DefaultExpiresIn    = 3600
)

// Token prefixes; tests grep outputs for them.
const (
	AccessTokenPrefix  = "oauthtest-at-"
	RefreshTokenPrefix = "oauthtest-rt-"
)

const maxRequestBody = 1 << 20

// Config configures a Provider.
type Config struct {
	ClientID     string // DefaultClientID when ""
	ClientSecret string // DefaultClientSecret when ""
	// AuthStyle is the client authentication the provider demands:
	// oauth.AuthStyleBasic (also when "") or oauth.AuthStyleBody. The other
	// style, or both at once, is refused with 401 invalid_client.
	AuthStyle string
	TLS       bool // Start serves HTTPS (httptest.NewTLSServer) instead of HTTP
}

// APIRequest is what the resource API received (Authorization removed).
type APIRequest struct {
	Method   string
	Path     string // decoded
	RawPath  string // as sent (escaped)
	RawQuery string
	Header   http.Header
	Body     []byte
}

type grant struct {
	refresh string
	access  string
	scopes  []string
}

type injected struct {
	status      int
	code        string
	raw         []byte
	contentType string
}

// Provider is the fake provider. Create it with Start (a running server)
// or NewProvider (just the handler, e.g. for the dev stand-in).
type Provider struct {
	clientID     string
	clientSecret string
	authStyle    string

	srv       *httptest.Server
	closing   chan struct{} // closed by Close: cuts delays and holds short
	closeOnce sync.Once

	mu             sync.Mutex
	byRefresh      map[string]*grant
	byAccess       map[string]*grant
	revoked        []string
	refreshCount   int
	lastAuthStyle  string
	rotate         bool
	omitRefresh    bool
	omitExpiresIn  bool
	omitScope      bool
	expiresIn      int64
	grantedScopes  []string
	refreshDelay   time.Duration
	echoTokens     bool
	nextRefreshErr *injected
	nextRevokeErr  *injected
	apiRequests    []APIRequest
	holds          map[string]*hold
}

// Endpoints that Hold can hold.
const (
	HoldToken  = "token"  // after the grant is decided (a rotated refresh token is already dead)
	HoldRevoke = "revoke" // after the token is revoked, before the answer
	HoldAPI    = "api"    // after the bearer token is checked and the body read
)

type hold struct {
	entered chan struct{}
	gate    chan struct{}
}

// Hold makes calls to endpoint (HoldToken, HoldRevoke, HoldAPI) wait,
// after they have done their work, until release is called: a provider
// that answers slowly, without any timing in the test. entered receives
// once per held call (buffered; unread sends beyond 64 are dropped). A
// held call whose client gives up returns without an answer.
func (p *Provider) Hold(endpoint string) (entered <-chan struct{}, release func()) {
	h := &hold{entered: make(chan struct{}, 64), gate: make(chan struct{})}
	p.mu.Lock()
	if p.holds == nil {
		p.holds = map[string]*hold{}
	}
	p.holds[endpoint] = h
	p.mu.Unlock()
	var once sync.Once
	return h.entered, func() {
		once.Do(func() {
			p.mu.Lock()
			if p.holds[endpoint] == h {
				delete(p.holds, endpoint)
			}
			p.mu.Unlock()
			close(h.gate)
		})
	}
}

// wait holds a call to endpoint if Hold asked for it; false when the
// client gave up (or the test ended) meanwhile.
func (p *Provider) wait(r *http.Request, endpoint string) bool {
	p.mu.Lock()
	h := p.holds[endpoint]
	p.mu.Unlock()
	if h == nil {
		return true
	}
	select {
	case h.entered <- struct{}{}:
	default:
	}
	select {
	case <-h.gate:
		return true
	case <-r.Context().Done():
		return false
	case <-p.closing:
		return false
	}
}

// NewProvider returns a Provider without a server; serve Handler() yourself.
// Rotation is on.
func NewProvider(cfg Config) *Provider {
	p := &Provider{
		clientID:     cfg.ClientID,
		clientSecret: cfg.ClientSecret,
		authStyle:    cfg.AuthStyle,
		byRefresh:    make(map[string]*grant),
		byAccess:     make(map[string]*grant),
		rotate:       true,
		closing:      make(chan struct{}),
		expiresIn:    DefaultExpiresIn,
	}
	if p.clientID == "" {
		p.clientID = DefaultClientID
	}
	if p.clientSecret == "" {
		p.clientSecret = DefaultClientSecret
	}
	if p.authStyle == "" {
		p.authStyle = oauth.AuthStyleBasic
	}
	return p
}

// Start starts a Provider on 127.0.0.1 (HTTPS when cfg.TLS); Close stops
// it.
func Start(cfg Config) *Provider {
	p := NewProvider(cfg)
	if cfg.TLS {
		p.srv = httptest.NewTLSServer(p.Handler())
	} else {
		p.srv = httptest.NewServer(p.Handler())
	}
	return p
}

// Close stops a started Provider: held calls are let go first, since the
// server's Close waits for every handler. Safe to call more than once.
func (p *Provider) Close() {
	p.closeOnce.Do(func() {
		close(p.closing)
		if p.srv != nil {
			p.srv.Close()
		}
	})
}

// URL is the server's base URL (Start only).
func (p *Provider) URL() string { return p.srv.URL }

// TokenURL is the token endpoint.
func (p *Provider) TokenURL() string { return p.srv.URL + "/token" }

// RevocationURL is the RFC 7009 endpoint.
func (p *Provider) RevocationURL() string { return p.srv.URL + "/revoke" }

// APIBaseURL is the resource API's base (an api_base_url).
func (p *Provider) APIBaseURL() string { return p.srv.URL + "/api" }

// Client is an HTTP client that trusts the server (its TLS certificate when
// cfg.TLS).
func (p *Provider) Client() *http.Client { return p.srv.Client() }

// Certificate is the server's TLS certificate (nil for plain HTTP).
func (p *Provider) Certificate() *x509.Certificate { return p.srv.Certificate() }

// ClientID is the client id the provider accepts.
func (p *Provider) ClientID() string { return p.clientID }

// ClientSecret is the client secret the provider accepts.
func (p *Provider) ClientSecret() secret.String { return secret.NewString(p.clientSecret) }

// AuthStyle is the client authentication style the provider demands.
func (p *Provider) AuthStyle() string { return p.authStyle }

// Endpoint is an oauth.Endpoint pointing at this provider with the right
// credentials, style and HTTP client (Start only).
func (p *Provider) Endpoint() oauth.Endpoint {
	return oauth.Endpoint{
		TokenURL:      p.TokenURL(),
		RevocationURL: p.RevocationURL(),
		ClientID:      p.clientID,
		ClientSecret:  p.ClientSecret(),
		AuthStyle:     p.authStyle,
		HTTPClient:    p.Client(),
	}
}

// IssueInitialToken creates a grant and returns the token pair the provider
// will accept, as a token response would carry it (for store_token).
func (p *Provider) IssueInitialToken(scopes []string) oauth.Token {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := &grant{refresh: newToken(RefreshTokenPrefix), access: newToken(AccessTokenPrefix), scopes: append([]string(nil), scopes...)}
	p.byRefresh[g.refresh] = g
	p.byAccess[g.access] = g
	return oauth.Token{
		AccessToken:  secret.NewString(g.access),
		RefreshToken: secret.NewString(g.refresh),
		TokenType:    "Bearer",
		ExpiresIn:    p.expiresIn,
		Scope:        append([]string(nil), scopes...),
	}
}

// TokenResponseJSON renders t as an RFC 6749 §5.1 JSON body with the real
// token values (secret.String marshals as [REDACTED], so tests need this to
// build store_token bodies).
func TokenResponseJSON(t oauth.Token) []byte {
	m := map[string]any{"access_token": t.AccessToken.Reveal(), "token_type": t.TokenType}
	if !t.RefreshToken.IsZero() {
		m["refresh_token"] = t.RefreshToken.Reveal()
	}
	if t.ExpiresIn > 0 {
		m["expires_in"] = t.ExpiresIn
	}
	if len(t.Scope) > 0 {
		m["scope"] = strings.Join(t.Scope, " ")
	}
	b, _ := json.Marshal(m) // a map of strings and ints always marshals
	return b
}

// --- knobs ---

// SetRotation turns refresh-token rotation on (default) or off. Off: the
// refresh token stays valid and is returned again (unless omitted).
func (p *Provider) SetRotation(on bool) { p.mu.Lock(); p.rotate = on; p.mu.Unlock() }

// SetOmitRefreshToken makes refresh answers omit refresh_token. With
// rotation on, the (unchanged) refresh token still stays valid then, as a
// provider that omits it must keep it working.
func (p *Provider) SetOmitRefreshToken(omit bool) { p.mu.Lock(); p.omitRefresh = omit; p.mu.Unlock() }

// SetOmitExpiresIn makes refresh answers omit expires_in.
func (p *Provider) SetOmitExpiresIn(omit bool) { p.mu.Lock(); p.omitExpiresIn = omit; p.mu.Unlock() }

// SetOmitScope makes refresh answers omit scope.
func (p *Provider) SetOmitScope(omit bool) { p.mu.Lock(); p.omitScope = omit; p.mu.Unlock() }

// SetExpiresIn sets expires_in of issued tokens (default DefaultExpiresIn).
func (p *Provider) SetExpiresIn(seconds int64) { p.mu.Lock(); p.expiresIn = seconds; p.mu.Unlock() }

// SetGrantedScopes makes refreshes grant (and answer) exactly these scopes,
// e.g. more than were stored, to provoke scope drift. nil restores the
// default: the grant's own scopes (or the narrower requested ones); an
// empty non-nil slice grants no scope, so the answer omits scope.
func (p *Provider) SetGrantedScopes(scopes []string) {
	p.mu.Lock()
	p.grantedScopes = slices.Clone(scopes) // keeps nil vs empty apart
	p.mu.Unlock()
}

// SetRefreshDelay delays every token endpoint answer by d (or until the
// client goes away), to widen race windows or provoke client timeouts.
func (p *Provider) SetRefreshDelay(d time.Duration) { p.mu.Lock(); p.refreshDelay = d; p.mu.Unlock() }

// SetNextRefreshError makes the next token endpoint request (after client
// authentication) fail with {"error": code} and status. One-shot.
func (p *Provider) SetNextRefreshError(code string, status int) {
	p.mu.Lock()
	p.nextRefreshErr = &injected{status: status, code: code}
	p.mu.Unlock()
}

// SetNextRefreshResponse makes the next token endpoint request answer
// status with exactly body (malformed JSON, oversized bodies, ...). One-shot.
func (p *Provider) SetNextRefreshResponse(status int, contentType string, body []byte) {
	p.mu.Lock()
	p.nextRefreshErr = &injected{status: status, raw: append([]byte(nil), body...), contentType: contentType}
	p.mu.Unlock()
}

// SetNextRevokeError makes the next revocation request fail with
// {"error": code} and status. One-shot.
func (p *Provider) SetNextRevokeError(code string, status int) {
	p.mu.Lock()
	p.nextRevokeErr = &injected{status: status, code: code}
	p.mu.Unlock()
}

// SetEchoTokens makes every error answer of the token and revocation
// endpoints echo the token it received (in error_description and an extra
// member), like a careless provider would.
func (p *Provider) SetEchoTokens(on bool) { p.mu.Lock(); p.echoTokens = on; p.mu.Unlock() }

// --- observers ---

// RefreshCount is the number of requests the token endpoint has received
// (successful or not).
func (p *Provider) RefreshCount() int { p.mu.Lock(); defer p.mu.Unlock(); return p.refreshCount }

// Revoked lists every token the revocation endpoint accepted, in order.
func (p *Provider) Revoked() []secret.String {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]secret.String, len(p.revoked))
	for i, r := range p.revoked {
		out[i] = secret.NewString(r)
	}
	return out
}

// IsRevoked reports whether tok was sent to the revocation endpoint.
func (p *Provider) IsRevoked(tok secret.String) bool {
	for _, r := range p.Revoked() {
		if r.Equal(tok) {
			return true
		}
	}
	return false
}

// AccessTokenValid reports whether the API currently accepts tok.
func (p *Provider) AccessTokenValid(tok secret.String) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.byAccess[tok.Reveal()]
	return ok
}

// RefreshTokenValid reports whether the token endpoint currently accepts tok.
func (p *Provider) RefreshTokenValid(tok secret.String) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.byRefresh[tok.Reveal()]
	return ok
}

// LastAuthStyle is the client authentication style of the last token or
// revocation request: "basic", "body", "both" or "none".
func (p *Provider) LastAuthStyle() string { p.mu.Lock(); defer p.mu.Unlock(); return p.lastAuthStyle }

// APIRequests returns the authorised requests the API received, in order.
func (p *Provider) APIRequests() []APIRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]APIRequest(nil), p.apiRequests...)
}

// --- handlers ---

// Handler serves /token, /revoke and /api/.
func (p *Provider) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", p.serveToken)
	mux.HandleFunc("POST /revoke", p.serveRevoke)
	mux.Handle("/api/", p.requireBearer(p.apiMux()))
	return mux
}

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

func (p *Provider) requireBearer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		p.mu.Lock()
		_, valid := p.byAccess[tok]
		p.mu.Unlock()
		if !ok || tok == "" || !valid {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "body too large"})
			return
		}
		h := r.Header.Clone()
		h.Del("Authorization")
		rec := APIRequest{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery, Header: h, Body: body}
		p.mu.Lock()
		p.apiRequests = append(p.apiRequests, rec)
		p.mu.Unlock()
		if !p.wait(r, HoldAPI) {
			return
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		r.Header.Set("X-Oauthtest-Token", tok) // for /api/reflect-token; stripped from echoes
		next.ServeHTTP(w, r)
	})
}

func (p *Provider) apiMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/reflect-token", serveReflect)
	mux.HandleFunc("/api/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	})
	mux.HandleFunc("/api/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 200 || code > 599 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "status must be 200-599"})
			return
		}
		writeJSON(w, code, map[string]int{"status": code})
	})
	mux.HandleFunc("/api/stream", serveStream)
	mux.HandleFunc("/api/", serveEcho)
	return mux
}

// serveReflect reflects the bearer token in headers and in the body, the
// body copy split across two flushed writes at ?split=N (default: the
// middle) so that a streaming redactor must handle a token spanning chunks.
// ?enc= reflects it spelled another way (ReflectEncodings), as upstreams
// that encode what they echo do.
func serveReflect(w http.ResponseWriter, r *http.Request) {
	tok := r.Header.Get("X-Oauthtest-Token")
	if enc := r.URL.Query().Get("enc"); enc != "" {
		f, ok := reflectEncodings[enc]
		if !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unknown enc"})
			return
		}
		tok = f(tok)
	}
	split := len(tok) / 2
	if s, err := strconv.Atoi(r.URL.Query().Get("split")); err == nil && s >= 0 && s <= len(tok) {
		split = s
	}
	w.Header().Set("X-Reflected-Token", tok)
	w.Header().Set("X-Reflected-Authorization", "Bearer "+tok)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	flush := func() {
		if fl != nil {
			fl.Flush()
		}
	}
	_, _ = io.WriteString(w, "token="+tok[:split])
	flush()
	_, _ = io.WriteString(w, tok[split:]+"\n")
	flush()
	_, _ = io.WriteString(w, "again="+tok+"\nend\n")
}

// reflectEncodings are the ?enc= spellings of /api/reflect-token.
var reflectEncodings = map[string]func(tok string) string{
	"base64":          func(t string) string { return base64.StdEncoding.EncodeToString([]byte(t)) },
	"base64url":       func(t string) string { return base64.URLEncoding.EncodeToString([]byte(t)) },
	"base64-raw":      func(t string) string { return base64.RawStdEncoding.EncodeToString([]byte(t)) },
	"base64-bearer":   func(t string) string { return base64.StdEncoding.EncodeToString([]byte("Bearer " + t)) },
	"base64url-basic": func(t string) string { return base64.URLEncoding.EncodeToString([]byte("user:" + t)) },
	"pct-lower":       func(t string) string { return lowerHexEscapes(url.QueryEscape(t)) },
	"json-slash":      func(t string) string { return strings.ReplaceAll(t, "/", `\/`) },
	"json-u":          strings.NewReplacer("/", `\u002f`, "+", `\u002b`, "=", `\u003d`).Replace,
	"json-u-upper":    strings.NewReplacer("/", `\u002F`, "+", `\u002B`, "=", `\u003D`).Replace,
	"form":            func(t string) string { return strings.ReplaceAll(t, "+", " ") },
	"hex":             func(t string) string { return hex.EncodeToString([]byte(t)) },
}

// ReflectEncodings lists the ?enc= values /api/reflect-token accepts.
func ReflectEncodings() []string {
	return slices.Sorted(maps.Keys(reflectEncodings))
}

// lowerHexEscapes lower-cases the hex digits of every %XX escape.
func lowerHexEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lowerHex(b[i+1]), lowerHex(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func lowerHex(c byte) byte {
	if c >= 'A' && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}

// ReflectHandler serves what /api/reflect-token does, at any path, for any
// bearer token, unchecked: for tests whose upstream must echo a token this
// provider did not issue (one with "/+=" in it, say).
func ReflectHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
			return
		}
		r.Header.Set("X-Oauthtest-Token", tok)
		serveReflect(w, r)
	})
}

// serveStream writes ?n= chunks (default 5, at most 1000) of ?size= bytes
// (default 16, at most 64 KiB) each, flushing after every one.
func serveStream(w http.ResponseWriter, r *http.Request) {
	n := boundedInt(r.URL.Query().Get("n"), 5, 1000)
	size := boundedInt(r.URL.Query().Get("size"), 16, 64<<10)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	chunk := strings.Repeat("x", size)
	for i := range n {
		_, _ = fmt.Fprintf(w, "%d:%s\n", i, chunk)
		if fl != nil {
			fl.Flush()
		}
	}
}

func boundedInt(s string, def, max int) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return def
	}
	return min(n, max)
}

// EchoResponse is what the API's echo endpoints answer.
type EchoResponse struct {
	Method     string              `json:"method"`
	Path       string              `json:"path"`
	RawPath    string              `json:"raw_path"`
	RawQuery   string              `json:"raw_query"`
	Query      map[string][]string `json:"query"`
	Headers    map[string][]string `json:"headers"` // Authorization is never echoed
	Body       string              `json:"body,omitempty"`
	BodyBase64 string              `json:"body_base64,omitempty"`
	BearerOK   bool                `json:"bearer_ok"`
}

func serveEcho(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body) // already read and bounded by requireBearer
	h := r.Header.Clone()
	h.Del("Authorization")
	h.Del("X-Oauthtest-Token")
	resp := EchoResponse{
		Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
		Query: r.URL.Query(), Headers: h, BearerOK: true,
	}
	if utf8.Valid(body) {
		resp.Body = string(body)
	} else {
		resp.BodyBase64 = base64.StdEncoding.EncodeToString(body)
	}
	writeJSON(w, http.StatusOK, resp)
}
