// Package fakeprovider is an in-process fake OAuth 2.0 provider and
// resource API: an authorization endpoint with a consent page (RFC 6749
// §4.1, PKCE S256 per RFC 7636, iss per RFC 9207), a token endpoint
// (authorization_code, client_credentials and refresh_token grants) that
// asserts the configured client authentication style, a revocation endpoint
// (RFC 7009) that records what it revoked, and an API under /api/ that
// requires the current access token and echoes what it received. Knobs make
// it misbehave on demand (error answers, omitted members, delays, reflected
// tokens, redirects, a wrong issuer). Every knob and observer is safe for
// concurrent use.
//
// Tests use it through vaultd/oauth/oauthtest, whose New ties a started
// provider to a test; the dev-only stand-in provider (cmd/vaultd-devprovider)
// serves its Handler. It does not import the testing package, so a binary
// built on it does not link it either.
//
// Tokens and codes it issues are random and carry the prefixes
// "oauthtest-at-", "oauthtest-rt-" and "oauthtest-code-", so leaks are easy
// to search for.
package fakeprovider

import (
	"crypto/x509"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

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
	CodePrefix         = "oauthtest-code-"
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
	// RedirectURIs are the redirect URIs /authorize accepts, compared
	// exactly (SetRedirectURIs replaces them). None: every request is
	// refused.
	RedirectURIs []string
	// RequirePKCE makes /authorize refuse a request without a
	// code_challenge (SetRequirePKCE changes it).
	RequirePKCE bool
	// Issuer is the iss of authorization responses (RFC 9207); "" means
	// URL() for a started provider, and none for NewProvider's.
	Issuer string
	// Now is the clock of code and consent-form lifetimes; nil: time.Now.
	Now func() time.Time
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
	refresh string // "" for a client_credentials grant
	access  string
	scopes  []string
	client  string // the client it was issued to
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
	issuer       string
	now          func() time.Time

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

	clients       map[string]string // client id -> secret, the default one included
	redirectURIs  []string
	requirePKCE   bool
	pending       map[string]*authRequest // consent form token -> request
	codes         map[string]*authCode
	usedCodes     map[string]*grant // redeemed code -> what it bought (revoked on replay)
	omitIss       bool
	wrongIss      bool
	extraFields   map[string]string
	codeExchanges int
	ccCount       int
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
		issuer:       cfg.Issuer,
		now:          cfg.Now,
		redirectURIs: slices.Clone(cfg.RedirectURIs),
		requirePKCE:  cfg.RequirePKCE,
		pending:      make(map[string]*authRequest),
		codes:        make(map[string]*authCode),
		usedCodes:    make(map[string]*grant),
	}
	if p.now == nil {
		p.now = time.Now
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
	p.clients = map[string]string{p.clientID: p.clientSecret}
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

// Issuer is the iss the provider puts in authorization responses:
// Config.Issuer, else URL() when started, else "" (then none is sent).
func (p *Provider) Issuer() string {
	if p.issuer != "" {
		return p.issuer
	}
	if p.srv != nil {
		return p.srv.URL
	}
	return ""
}

// AuthorizationURL is the authorization endpoint (Start only).
func (p *Provider) AuthorizationURL() string { return p.srv.URL + "/authorize" }

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
	g := &grant{refresh: newToken(RefreshTokenPrefix), access: newToken(AccessTokenPrefix), scopes: append([]string(nil), scopes...), client: p.clientID}
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
// Every grant, not only refresh: SetTokenDelay is the same knob.
func (p *Provider) SetRefreshDelay(d time.Duration) { p.mu.Lock(); p.refreshDelay = d; p.mu.Unlock() }

// SetTokenDelay is SetRefreshDelay under the name that fits every grant.
func (p *Provider) SetTokenDelay(d time.Duration) { p.SetRefreshDelay(d) }

// SetNextRefreshError makes the next token endpoint request (after client
// authentication), whatever its grant, fail with {"error": code} and
// status. One-shot. SetNextTokenError is the same knob.
func (p *Provider) SetNextRefreshError(code string, status int) {
	p.mu.Lock()
	p.nextRefreshErr = &injected{status: status, code: code}
	p.mu.Unlock()
}

// SetNextTokenError is SetNextRefreshError under the name that fits every
// grant.
func (p *Provider) SetNextTokenError(code string, status int) { p.SetNextRefreshError(code, status) }

// AddClient registers another client ("bring your own app"): it
// authenticates with the provider's auth style and gets its own codes and
// tokens, which no other client can redeem or refresh. Re-adding an id
// replaces its secret.
func (p *Provider) AddClient(id, secret string) {
	p.mu.Lock()
	p.clients[id] = secret
	p.mu.Unlock()
}

// SetRedirectURIs replaces the redirect URIs /authorize accepts (exact
// match).
func (p *Provider) SetRedirectURIs(uris ...string) {
	p.mu.Lock()
	p.redirectURIs = slices.Clone(uris)
	p.mu.Unlock()
}

// SetRequirePKCE makes /authorize refuse requests without a code_challenge.
func (p *Provider) SetRequirePKCE(on bool) { p.mu.Lock(); p.requirePKCE = on; p.mu.Unlock() }

// SetOmitIssuer makes authorization responses carry no iss.
func (p *Provider) SetOmitIssuer(omit bool) { p.mu.Lock(); p.omitIss = omit; p.mu.Unlock() }

// WrongIssuer is the iss sent under SetWrongIssuer: a mix-up attacker's.
const WrongIssuer = "https://wrong-issuer.oauthtest.invalid"

// SetWrongIssuer makes authorization responses carry WrongIssuer as iss,
// as a mix-up attack would (RFC 9207).
func (p *Provider) SetWrongIssuer(wrong bool) { p.mu.Lock(); p.wrongIss = wrong; p.mu.Unlock() }

// SetExtraTokenFields adds these members (instance_url, say) to the
// answers of the authorization_code and refresh_token grants; nil removes
// them. A name the answer already has is not overridden.
func (p *Provider) SetExtraTokenFields(fields map[string]string) {
	p.mu.Lock()
	p.extraFields = maps.Clone(fields)
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
// (successful or not), whatever their grant.
func (p *Provider) RefreshCount() int { p.mu.Lock(); defer p.mu.Unlock(); return p.refreshCount }

// CodeExchangeCount is the number of authorization_code grant requests the
// token endpoint has received (successful or not).
func (p *Provider) CodeExchangeCount() int { p.mu.Lock(); defer p.mu.Unlock(); return p.codeExchanges }

// ClientCredentialsCount is the number of client_credentials grant requests
// the token endpoint has received (successful or not).
func (p *Provider) ClientCredentialsCount() int { p.mu.Lock(); defer p.mu.Unlock(); return p.ccCount }

// TokenClient is the client id the access token tok was issued to; "" for
// a token the provider does not (or no longer) accept.
func (p *Provider) TokenClient(tok secret.String) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if g, ok := p.byAccess[tok.Reveal()]; ok {
		return g.client
	}
	return ""
}

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

// Handler serves /authorize, /authorize/decision, /token, /revoke and
// /api/.
func (p *Provider) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", p.serveAuthorize)
	mux.HandleFunc("POST /authorize/decision", p.serveDecision)
	mux.HandleFunc("POST /token", p.serveToken)
	mux.HandleFunc("POST /revoke", p.serveRevoke)
	mux.Handle("/api/", p.requireBearer(p.apiMux()))
	return mux
}
