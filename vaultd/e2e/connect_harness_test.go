package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// The connect flow's harness: a vaultd with a [connect] listener whose
// redirect URI the fake provider trusts, and "browsers" (HTTP clients with
// a cookie jar that never follow a redirect by themselves) to walk it.

// connectReturnTo is the return_to the API-level tests use: the browser is
// never sent there by these tests, only the Location is read.
const connectReturnTo = "https://app.example.com/done"

// connectOptions tunes a connect Env.
type connectOptions struct {
	// ReturnTo are more allowed return_to prefixes (the app.example.com
	// one is always there).
	ReturnTo []string
	// Providers is appended after [connect]: more [providers.*] tables.
	// %[1]s in it is the fake provider's base URL, %[2]s the provider CA
	// file and %[3]s the client secret file.
	Providers string
	// SessionTTL sets [connect] session_ttl ("": the default).
	SessionTTL string
}

// connectEnv is an Env with the connect listener on.
type connectEnv struct {
	*Env
	// Public is the connect listener's https origin (public_url).
	Public string
	// Callback is the redirect URI vaultd sends (public_url + /oauth/callback).
	Callback string

	mu sync.Mutex
	// seen collects every browser-facing answer (status line, headers and
	// body) and every URL a browser was sent to, for the leak checks.
	seen []string
}

// newConnectEnv starts vaultd with [connect], the example provider's
// authorization_url (and authorize_params access_type=offline), and the
// fake provider trusting the callback.
func newConnectEnv(t *testing.T, co connectOptions) *connectEnv {
	t.Helper()
	e := New(t, Options{NoStart: true})
	port := freePort(t)
	c := &connectEnv{Env: e, Public: "https://127.0.0.1:" + port}
	c.Callback = c.Public + "/oauth/callback"
	e.Provider.SetRedirectURIs(c.Callback)
	returnTo := append([]string{"https://app.example.com/"}, co.ReturnTo...)
	rt, err := json.Marshal(returnTo)
	must(t, err)
	ttl := ""
	if co.SessionTTL != "" {
		ttl = fmt.Sprintf("session_ttl = %q\n", co.SessionTTL)
	}
	providers := ""
	if co.Providers != "" {
		providers = fmt.Sprintf(co.Providers, e.Provider.URL(), filepath.Join(e.Dir, "provider-ca.pem"), filepath.Join(e.Dir, "client-secret"))
	}
	e.Opts.ExtraConfig = fmt.Sprintf(`authorization_url = %q
authorize_params  = { access_type = "offline" }

[connect]
listen     = "127.0.0.1:%s"
public_url = %q
return_to  = %s
%s
%s`, e.Provider.AuthorizationURL(), port, c.Public, rt, ttl, providers)
	must(t, os.WriteFile(e.ConfigPath, []byte(e.ConfigText()), 0o600))
	e.Start()
	return c
}

// browser is a fresh browser: its own cookie jar, trusting the test CA, no
// client certificate, redirects not followed (each hop is looked at).
func (c *connectEnv) browser(t testing.TB) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(c.PKIDir, "ca.crt"))
	must(t, err)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA certificate")
	}
	jar, err := cookiejar.New(nil)
	must(t, err)
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		Jar:       jar,
		Timeout:   60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// visit is one browser GET on the connect listener; the answer is kept for
// the leak checks and its security headers are checked on every answer.
func (c *connectEnv) visit(t *testing.T, b *http.Client, rawURL string) apiResp {
	t.Helper()
	if !strings.HasPrefix(rawURL, c.Public+"/") {
		t.Fatalf("%s is not on the connect listener %s", rawURL, c.Public)
	}
	r := do(t, b, http.MethodGet, rawURL, nil)
	wantBrowserHeaders(t, rawURL, r)
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d\n", r.Status)
	for k, vs := range r.Header {
		if k == "Set-Cookie" {
			continue // the binding cookie is the browser's own secret
		}
		fmt.Fprintf(&sb, "%s: %s\n", k, strings.Join(vs, ", "))
	}
	sb.Write(r.Body)
	c.mu.Lock()
	c.seen = append(c.seen, sb.String())
	c.mu.Unlock()
	return r
}

// wantBrowserHeaders checks the headers every connect listener answer has.
func wantBrowserHeaders(t *testing.T, what string, r apiResp) {
	t.Helper()
	h := r.Header
	if got := h.Get("Cache-Control"); got != "no-store" {
		t.Errorf("%s: Cache-Control %q", what, got)
	}
	if got := h.Get("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("%s: Referrer-Policy %q", what, got)
	}
	if got := h.Get("Content-Security-Policy"); !strings.Contains(got, "default-src 'none'") {
		t.Errorf("%s: Content-Security-Policy %q", what, got)
	}
	if got := h.Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("%s: X-Frame-Options %q", what, got)
	}
}

// startSession creates a connect session as app; it fails the test unless
// the answer is 201 and returns the session id and link.
func (c *connectEnv) startSession(t *testing.T, app string, body map[string]any) (id, link string) {
	t.Helper()
	r := c.createSession(t, app, body)
	wantStatus(t, r, http.StatusCreated)
	m := jsonObject(t, r.Body)
	wantKeys(t, m, "id", "url", "expires_at")
	id, _ = m["id"].(string)
	link, _ = m["url"].(string)
	if id == "" || !strings.HasPrefix(link, c.Public+"/connect/") {
		t.Fatalf("session answer %s", r.Body)
	}
	return id, link
}

// createSession posts a session body as app.
func (c *connectEnv) createSession(t *testing.T, app string, body map[string]any) apiResp {
	t.Helper()
	b, err := json.Marshal(body)
	must(t, err)
	return do(t, c.HTTP(app), http.MethodPost, c.API+"/v1/connect/sessions", b)
}

// session reads a session as app.
func (c *connectEnv) session(t *testing.T, app, id string) apiResp {
	t.Helper()
	return do(t, c.HTTP(app), http.MethodGet, c.API+"/v1/connect/sessions/"+id, nil)
}

// sessionStatus reads a session's status and error as acme's app.
func (c *connectEnv) sessionStatus(t *testing.T, id string) (status, errCode string) {
	t.Helper()
	r := c.session(t, AppAcme, id)
	wantStatus(t, r, http.StatusOK)
	m := jsonObject(t, r.Body)
	wantKeys(t, m, "id", "integration_id", "provider", "status", "error", "expires_at")
	status, _ = m["status"].(string)
	errCode, _ = m["error"].(string)
	return status, errCode
}

// openLink opens a connect link in browser b and answers the provider's
// authorization URL it was sent to (302).
func (c *connectEnv) openLink(t *testing.T, b *http.Client, link string) (authURL string, r apiResp) {
	t.Helper()
	r = c.visit(t, b, link)
	if r.Status != http.StatusFound {
		t.Fatalf("open link: status %d, want 302: %s", r.Status, r.Body)
	}
	authURL = r.Header.Get("Location")
	if !strings.HasPrefix(authURL, c.Provider.AuthorizationURL()+"?") {
		t.Fatalf("open link: Location %q is not the provider's authorization endpoint", authURL)
	}
	return authURL, r
}

// consent plays the user at the provider: the callback URL the decision
// sends the browser to.
func (c *connectEnv) consent(t *testing.T, authURL string, approve bool) string {
	t.Helper()
	cb, err := c.Provider.Authorize(authURL, approve)
	if err != nil {
		t.Fatalf("provider refused the authorization request: %v", err)
	}
	if !strings.HasPrefix(cb, c.Callback+"?") {
		t.Fatalf("provider sent the browser to %q, not the callback", cb)
	}
	return cb
}

// returnTo checks r is a 303 to return_to and returns its query.
func (c *connectEnv) returnTo(t *testing.T, r apiResp, want string) url.Values {
	t.Helper()
	if r.Status != http.StatusSeeOther {
		t.Fatalf("callback: status %d, want 303: %s", r.Status, r.Body)
	}
	loc := r.Header.Get("Location")
	c.mu.Lock()
	c.seen = append(c.seen, "Location: "+loc)
	c.mu.Unlock()
	u, err := url.Parse(loc)
	must(t, err)
	if u.Scheme+"://"+u.Host+u.Path != want {
		t.Fatalf("callback sent the browser to %q, want %s", loc, want)
	}
	return u.Query()
}

// connectFlow walks a whole flow in browser b: open, consent, callback;
// it returns the callback URL (with code and state) and the answer.
func (c *connectEnv) connectFlow(t *testing.T, b *http.Client, link string, approve bool) (cbURL string, r apiResp) {
	t.Helper()
	authURL, _ := c.openLink(t, b, link)
	cbURL = c.consent(t, authURL, approve)
	return cbURL, c.visit(t, b, cbURL)
}

// auditWhere are the audit events (all tenants) that match.
func auditWhere(t *testing.T, e *Env, match func(ev map[string]any) bool) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, ev := range obAudit(t, e) {
		if match(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// tokenPrefixes are the fake provider's secret prefixes.
var tokenPrefixes = []string{oauthtest.CodePrefix, oauthtest.AccessTokenPrefix, oauthtest.RefreshTokenPrefix}

// secretsIn names each of secrets found in s.
func secretsIn(s string, secrets []string) []string {
	var found []string
	for _, x := range secrets {
		if x != "" && strings.Contains(s, x) {
			found = append(found, x)
		}
	}
	return found
}

// queryValue is one query parameter of rawURL.
func queryValue(t *testing.T, rawURL, name string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	must(t, err)
	return u.Query().Get(name)
}
