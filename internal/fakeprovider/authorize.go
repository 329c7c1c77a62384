package fakeprovider

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The authorization endpoint (RFC 6749 §4.1.1-4.1.2): a consent page, the
// user's decision, and Authorize, the same without a browser.

// Lifetimes, on the provider's clock (Config.Now).
const (
	CodeLifetime    = 60 * time.Second // an issued authorization code
	ConsentLifetime = 10 * time.Minute // a consent page's form token
	maxPending      = 1024             // consent pages awaiting a decision
)

// authRequest is a validated authorization request awaiting the decision.
type authRequest struct {
	client      string
	redirectURI string
	state       string
	scopes      []string
	challenge   string // S256; "" without PKCE
	expires     time.Time
}

// authCode is an issued, not yet redeemed authorization code.
type authCode struct {
	client      string
	redirectURI string
	scopes      []string
	challenge   string
	expires     time.Time
}

// refusal is an authorization request that cannot be answered by a
// redirect: the client or redirect URI is not trusted (RFC 6749 §4.1.2.1),
// or the request is ambiguous. The user sees a 400 page.
type refusal struct{ reason string }

func (e *refusal) Error() string { return "fakeprovider: authorization request refused: " + e.reason }
func (e *refusal) Unwrap() error { return ErrAuthorizeRefused }

// ErrAuthorizeRefused is Authorize's error for a request that gets a 400
// page instead of a redirect.
var ErrAuthorizeRefused = errors.New("fakeprovider: authorization request refused")

// errPending means too many consent pages await a decision.
var errPending = errors.New("too many pending authorization requests")

// checkAuthorize validates an authorization request. A non-empty errCode
// is an error to send back to the (trusted) redirect URI; a *refusal is
// answered with a page.
func (p *Provider) checkAuthorize(q url.Values) (req *authRequest, errCode string, err error) {
	for _, name := range []string{"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"} {
		if len(q[name]) > 1 {
			return nil, "", &refusal{"parameter " + name + " repeated"} // RFC 6749 §3.1
		}
	}
	client, redirectURI := q.Get("client_id"), q.Get("redirect_uri")
	p.mu.Lock()
	_, known := p.clients[client]
	registered := slices.Contains(p.redirectURIs, redirectURI)
	requirePKCE := p.requirePKCE
	p.mu.Unlock()
	switch {
	case !known:
		return nil, "", &refusal{"unknown client_id"}
	case !registered:
		return nil, "", &refusal{"redirect_uri is not registered for this client"}
	case q.Get("state") == "":
		// The fake insists on state: vaultd must always send one.
		return nil, "", &refusal{"state missing"}
	}
	req = &authRequest{client: client, redirectURI: redirectURI, state: q.Get("state"), scopes: strings.Fields(q.Get("scope"))}
	if q.Get("response_type") != "code" {
		return req, "unsupported_response_type", nil
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case challenge == "" && method != "":
		return req, "invalid_request", nil
	case challenge == "" && requirePKCE:
		return req, "invalid_request", nil
	case challenge != "" && (method != "S256" || !validVerifier(challenge)):
		// Only S256 (RFC 7636 §4.2); an absent method would mean plain.
		return req, "invalid_request", nil
	}
	req.challenge = challenge
	return req, "", nil
}

// validVerifier is RFC 7636 §4.1's code_verifier syntax, which a base64url
// S256 challenge (43 characters) also satisfies.
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// decide answers an authorization request with the redirect a user's
// decision produces: a fresh code, or error=access_denied (or errCode).
func (p *Provider) decide(req *authRequest, approve bool, errCode string) string {
	params := url.Values{}
	switch {
	case errCode != "":
		params.Set("error", errCode)
	case !approve:
		params.Set("error", "access_denied")
	default:
		code := newToken(CodePrefix)
		p.mu.Lock()
		p.codes[code] = &authCode{client: req.client, redirectURI: req.redirectURI, scopes: req.scopes,
			challenge: req.challenge, expires: p.now().Add(CodeLifetime)}
		p.mu.Unlock()
		params.Set("code", code)
	}
	params.Set("state", req.state)
	if iss := p.callbackIssuer(); iss != "" {
		params.Set("iss", iss)
	}
	// The registered URI is kept as is, its own query included (§3.1.2).
	sep := "?"
	if strings.Contains(req.redirectURI, "?") {
		sep = "&"
	}
	return req.redirectURI + sep + params.Encode()
}

func (p *Provider) callbackIssuer() string {
	p.mu.Lock()
	omit, wrong := p.omitIss, p.wrongIss
	p.mu.Unlock()
	switch {
	case omit:
		return ""
	case wrong:
		return WrongIssuer
	}
	return p.Issuer()
}

// Authorize does what a user's browser and click would: it validates the
// authorization request authURL (this provider's /authorize with its
// query) as GET /authorize does and returns the redirect the decision
// produces: the callback URL with a code (approve) or
// error=access_denied, or with the error the request earned. A request
// that gets no redirect (unknown client, unregistered redirect_uri, no
// state, repeated parameters) is an error.
func (p *Provider) Authorize(authURL string, approve bool) (callbackURL string, err error) {
	u, err := url.Parse(authURL)
	if err != nil {
		return "", fmt.Errorf("fakeprovider: authorization URL: %w", err)
	}
	if !strings.HasSuffix(u.Path, "/authorize") {
		return "", errors.New("fakeprovider: not an /authorize URL")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return "", &refusal{"malformed query"}
	}
	req, errCode, err := p.checkAuthorize(q)
	if err != nil {
		return "", err
	}
	return p.decide(req, approve, errCode), nil
}

var consentPage = template.Must(template.New("consent").Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Fake provider: authorize {{.Client}}</title></head>
<body>
<h1>Fake provider: authorize {{.Client}}</h1>
<p>The application <strong>{{.Client}}</strong> asks for access to your account.</p>
{{if .Scopes}}<p>Requested scopes:</p>
<ul id="scopes">{{range .Scopes}}<li>{{.}}</li>{{end}}</ul>{{else}}<p>No scopes requested.</p>{{end}}
<form method="post" action="{{.Action}}">
<input type="hidden" name="form_token" value="{{.FormToken}}">
<button type="submit" name="decision" value="allow" id="allow">Allow</button>
<button type="submit" name="decision" value="deny" id="deny">Deny</button>
</form>
</body>
</html>
`))

var refusalPage = template.Must(template.New("refusal").Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Fake provider: error</title></head>
<body><h1>Fake provider: error</h1><p id="error">{{.}}</p></body>
</html>
`))

func pageHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	// No form-action: browsers apply it to the redirect after the POST,
	// which leaves for the client's redirect URI.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	w.Header().Set("Referrer-Policy", "no-referrer")
}

func refusePage(w http.ResponseWriter, reason string) {
	pageHeaders(w)
	w.WriteHeader(http.StatusBadRequest)
	_ = refusalPage.Execute(w, reason)
}

// serveAuthorize is GET /authorize: the consent page, or a redirect with
// an error, or a 400 page when there is no trusted redirect.
func (p *Provider) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		refusePage(w, "malformed query")
		return
	}
	req, errCode, err := p.checkAuthorize(q)
	var ref *refusal
	if errors.As(err, &ref) {
		refusePage(w, ref.reason)
		return
	}
	if errCode != "" {
		http.Redirect(w, r, p.decide(req, false, errCode), http.StatusFound)
		return
	}
	formToken, err := p.addPending(req)
	if err != nil {
		refusePage(w, err.Error())
		return
	}
	pageHeaders(w)
	_ = consentPage.Execute(w, map[string]any{
		"Client": req.client, "Scopes": req.scopes, "FormToken": formToken, "Action": "/authorize/decision",
	})
}

// addPending stores req under a fresh form token, which ties the consent
// form's POST to this request (and stands in for the CSRF token a real
// provider would bind to the user's session).
func (p *Provider) addPending(req *authRequest) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for tok, pr := range p.pending {
		if !now.Before(pr.expires) {
			delete(p.pending, tok)
		}
	}
	if len(p.pending) >= maxPending {
		return "", errPending
	}
	req.expires = now.Add(ConsentLifetime)
	tok := newToken("")
	p.pending[tok] = req
	return tok, nil
}

// serveDecision is POST /authorize/decision: the consent form's answer,
// redirected to the client (302).
func (p *Provider) serveDecision(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		refusePage(w, "malformed form")
		return
	}
	tok := r.PostForm.Get("form_token")
	p.mu.Lock()
	req, ok := p.pending[tok]
	delete(p.pending, tok) // single use
	p.mu.Unlock()
	if !ok || !p.now().Before(req.expires) {
		refusePage(w, "unknown or expired consent form")
		return
	}
	var approve bool
	switch r.PostForm.Get("decision") {
	case "allow":
		approve = true
	case "deny":
	default:
		refusePage(w, "no decision")
		return
	}
	http.Redirect(w, r, p.decide(req, approve, ""), http.StatusFound)
}
