package fakeprovider

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

const testRedirect = "https://vaultd.test/oauth/callback"

// The RFC 7636 Appendix B pair.
const (
	rfcVerifier  = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	rfcChallenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
)

// fakeClock is a settable clock for code and consent lifetimes.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func start(t *testing.T, cfg Config) *Provider {
	t.Helper()
	if cfg.RedirectURIs == nil {
		cfg.RedirectURIs = []string{testRedirect}
	}
	p := Start(cfg)
	t.Cleanup(p.Close)
	return p
}

// noRedirects is the provider's client, stopping at the first redirect.
func noRedirects(p *Provider) *http.Client {
	c := *p.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

func authURL(p *Provider, mod func(url.Values)) string {
	q := url.Values{
		"response_type": {"code"}, "client_id": {p.ClientID()}, "redirect_uri": {testRedirect},
		"scope": {"contacts.read contacts.write"}, "state": {"st-123"},
		"code_challenge": {rfcChallenge}, "code_challenge_method": {"S256"},
	}
	if mod != nil {
		mod(q)
	}
	return p.AuthorizationURL() + "?" + q.Encode()
}

// callback parses a redirect target and checks it goes to testRedirect.
func callback(t *testing.T, target string) url.Values {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != testRedirect {
		t.Fatalf("redirected to %q, want %q", got, testRedirect)
	}
	return u.Query()
}

type tokenAnswer struct {
	status int
	body   map[string]any
}

// tokenPost sends a grant with Basic client authentication.
func tokenPost(t *testing.T, p *Provider, id, sec string, form url.Values) tokenAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.TokenURL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(sec))
	resp, err := p.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("token answer: %v", err)
	}
	return tokenAnswer{resp.StatusCode, body}
}

func exchangeForm(code, redirect, verifier string) url.Values {
	f := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}}
	if verifier != "" {
		f.Set("code_verifier", verifier)
	}
	return f
}

func (a tokenAnswer) wantError(t *testing.T, code string) {
	t.Helper()
	if a.status != http.StatusBadRequest || a.body["error"] != code {
		t.Fatalf("answer %d %v, want 400 %s", a.status, a.body["error"], code)
	}
}

// TestConsentPageAllow walks the browser flow: the consent page, Allow,
// the redirect with code, state and iss, and the code exchange.
func TestConsentPageAllow(t *testing.T) {
	p := start(t, Config{})
	hc := noRedirects(p)
	resp, err := hc.Get(authURL(p, nil))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("consent page: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		"<title>Fake provider: authorize " + p.ClientID() + "</title>", "<li>contacts.read</li>", "<li>contacts.write</li>",
		`id="allow"`, `id="deny"`, `method="post"`, `action="/authorize/decision"`,
	} {
		if !strings.Contains(string(page), want) {
			t.Fatalf("consent page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(string(page), "<script") {
		t.Fatal("consent page has script")
	}
	m := regexp.MustCompile(`name="form_token" value="([^"]+)"`).FindSubmatch(page)
	if m == nil {
		t.Fatal("no form token")
	}
	formToken := string(m[1])

	resp, err = hc.PostForm(p.URL()+"/authorize/decision", url.Values{"form_token": {formToken}, "decision": {"allow"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("decision: %d", resp.StatusCode)
	}
	cb := callback(t, resp.Header.Get("Location"))
	code := cb.Get("code")
	if !strings.HasPrefix(code, CodePrefix) || cb.Get("state") != "st-123" || cb.Get("iss") != p.URL() || cb.Has("error") {
		t.Fatalf("callback %v", cb)
	}

	// The form token is single use.
	resp, err = hc.PostForm(p.URL()+"/authorize/decision", url.Values{"form_token": {formToken}, "decision": {"allow"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
		t.Fatalf("replayed form token: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	a := tokenPost(t, p, p.ClientID(), p.clientSecret, exchangeForm(code, testRedirect, rfcVerifier))
	if a.status != http.StatusOK {
		t.Fatalf("exchange: %d %v", a.status, a.body["error"])
	}
	at, _ := a.body["access_token"].(string)
	rt, _ := a.body["refresh_token"].(string)
	if !strings.HasPrefix(at, AccessTokenPrefix) || !strings.HasPrefix(rt, RefreshTokenPrefix) || a.body["scope"] != "contacts.read contacts.write" {
		t.Fatalf("exchange answer %v", a.body["scope"])
	}
	if !p.AccessTokenValid(secret.NewString(at)) || !p.RefreshTokenValid(secret.NewString(rt)) {
		t.Fatal("issued tokens not accepted")
	}
	if p.TokenClient(secret.NewString(at)) != p.ClientID() || p.CodeExchangeCount() != 1 {
		t.Fatalf("client %q count %d", p.TokenClient(secret.NewString(at)), p.CodeExchangeCount())
	}

	// A replayed code fails and takes the tokens it bought with it
	// (RFC 6749 §4.1.2).
	tokenPost(t, p, p.ClientID(), p.clientSecret, exchangeForm(code, testRedirect, rfcVerifier)).wantError(t, "invalid_grant")
	if p.AccessTokenValid(secret.NewString(at)) || p.RefreshTokenValid(secret.NewString(rt)) {
		t.Fatal("tokens of a replayed code still valid")
	}
	if p.CodeExchangeCount() != 2 {
		t.Fatalf("CodeExchangeCount = %d", p.CodeExchangeCount())
	}
}

func TestConsentPageDeny(t *testing.T) {
	p := start(t, Config{})
	target, err := p.Authorize(authURL(p, nil), false)
	if err != nil {
		t.Fatal(err)
	}
	cb := callback(t, target)
	if cb.Get("error") != "access_denied" || cb.Get("state") != "st-123" || cb.Has("code") || cb.Get("iss") != p.URL() {
		t.Fatalf("deny callback %v", cb)
	}
}

// TestAuthorizeRefusals: no redirect to an untrusted place, an error
// redirect for a bad request from a trusted client.
func TestAuthorizeRefusals(t *testing.T) {
	p := start(t, Config{})
	p.AddClient("other-app", "other-secret")
	pages := map[string]func(url.Values){
		"unknown client":        func(q url.Values) { q.Set("client_id", "nobody") },
		"unregistered redirect": func(q url.Values) { q.Set("redirect_uri", testRedirect+"/x") },
		"redirect prefix only":  func(q url.Values) { q.Set("redirect_uri", "https://vaultd.test/oauth/") },
		"no state":              func(q url.Values) { q.Del("state") },
		"repeated redirect":     func(q url.Values) { q.Add("redirect_uri", "https://evil.test/") },
	}
	for name, mod := range pages {
		t.Run(name, func(t *testing.T) {
			resp, err := noRedirects(p).Get(authURL(p, mod))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
				t.Fatalf("got %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			if _, err := p.Authorize(authURL(p, mod), true); !errors.Is(err, ErrAuthorizeRefused) {
				t.Fatalf("Authorize: %v", err)
			}
		})
	}
	redirects := map[string]struct {
		mod  func(url.Values)
		code string
	}{
		"token response type": {func(q url.Values) { q.Set("response_type", "token") }, "unsupported_response_type"},
		"plain PKCE":          {func(q url.Values) { q.Set("code_challenge_method", "plain") }, "invalid_request"},
		"method, no PKCE":     {func(q url.Values) { q.Del("code_challenge") }, "invalid_request"},
		"malformed challenge": {func(q url.Values) { q.Set("code_challenge", "short") }, "invalid_request"},
	}
	for name, c := range redirects {
		t.Run(name, func(t *testing.T) {
			resp, err := noRedirects(p).Get(authURL(p, c.mod))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusFound {
				t.Fatalf("status %d", resp.StatusCode)
			}
			cb := callback(t, resp.Header.Get("Location"))
			if cb.Get("error") != c.code || cb.Get("state") != "st-123" || cb.Has("code") {
				t.Fatalf("callback %v", cb)
			}
		})
	}
	t.Run("RequirePKCE", func(t *testing.T) {
		noPKCE := func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") }
		if _, err := p.Authorize(authURL(p, noPKCE), true); err != nil {
			t.Fatalf("PKCE optional: %v", err)
		}
		p.SetRequirePKCE(true)
		defer p.SetRequirePKCE(false)
		target, err := p.Authorize(authURL(p, noPKCE), true)
		if err != nil {
			t.Fatal(err)
		}
		if cb := callback(t, target); cb.Get("error") != "invalid_request" {
			t.Fatalf("callback %v", cb)
		}
	})
}

func approvedCode(t *testing.T, p *Provider, mod func(url.Values)) string {
	t.Helper()
	target, err := p.Authorize(authURL(p, mod), true)
	if err != nil {
		t.Fatal(err)
	}
	code := callback(t, target).Get("code")
	if code == "" {
		t.Fatalf("no code in %q", target)
	}
	return code
}

// TestCodeExchangeChecks: each binding of a code is enforced, and a
// failed attempt spends the code.
func TestCodeExchangeChecks(t *testing.T) {
	clock := &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	p := start(t, Config{Now: clock.Now})
	p.AddClient("other-app", "other-secret")
	id, sec := p.ClientID(), p.clientSecret
	cases := map[string]struct {
		id, sec string
		form    func(code string) url.Values
		before  func()
		want    string
	}{
		"wrong verifier": {id, sec, func(c string) url.Values {
			return exchangeForm(c, testRedirect, strings.Repeat("a", 43))
		}, nil, "invalid_grant"},
		"no verifier":    {id, sec, func(c string) url.Values { return exchangeForm(c, testRedirect, "") }, nil, "invalid_grant"},
		"wrong redirect": {id, sec, func(c string) url.Values { return exchangeForm(c, testRedirect+"/x", rfcVerifier) }, nil, "invalid_grant"},
		"other client": {"other-app", "other-secret", func(c string) url.Values {
			return exchangeForm(c, testRedirect, rfcVerifier)
		}, nil, "invalid_grant"},
		"expired": {id, sec, func(c string) url.Values { return exchangeForm(c, testRedirect, rfcVerifier) },
			func() { clock.Advance(CodeLifetime) }, "invalid_grant"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			code := approvedCode(t, p, nil)
			if c.before != nil {
				c.before()
			}
			tokenPost(t, p, c.id, c.sec, c.form(code)).wantError(t, c.want)
			// The failed attempt spent the code, even with everything right.
			tokenPost(t, p, id, sec, exchangeForm(code, testRedirect, rfcVerifier)).wantError(t, "invalid_grant")
		})
	}
	t.Run("unknown code", func(t *testing.T) {
		tokenPost(t, p, id, sec, exchangeForm(CodePrefix+"nope", testRedirect, rfcVerifier)).wantError(t, "invalid_grant")
	})
	t.Run("just before expiry", func(t *testing.T) {
		code := approvedCode(t, p, nil)
		clock.Advance(CodeLifetime - time.Second)
		if a := tokenPost(t, p, id, sec, exchangeForm(code, testRedirect, rfcVerifier)); a.status != http.StatusOK {
			t.Fatalf("exchange: %d %v", a.status, a.body["error"])
		}
	})
	t.Run("verifier without PKCE", func(t *testing.T) {
		code := approvedCode(t, p, func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") })
		tokenPost(t, p, id, sec, exchangeForm(code, testRedirect, rfcVerifier)).wantError(t, "invalid_request")
	})
	t.Run("wrong client secret", func(t *testing.T) {
		code := approvedCode(t, p, nil)
		a := tokenPost(t, p, id, "wrong", exchangeForm(code, testRedirect, rfcVerifier))
		if a.status != http.StatusUnauthorized || a.body["error"] != "invalid_client" {
			t.Fatalf("answer %d %v", a.status, a.body["error"])
		}
		// Client authentication failed before the code was looked at.
		if a := tokenPost(t, p, id, sec, exchangeForm(code, testRedirect, rfcVerifier)); a.status != http.StatusOK {
			t.Fatalf("exchange after a bad client: %d %v", a.status, a.body["error"])
		}
	})
}

// TestConsentFormExpires: a consent page left open past ConsentLifetime
// cannot be answered.
func TestConsentFormExpires(t *testing.T) {
	clock := &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	p := start(t, Config{Now: clock.Now})
	tok, err := p.addPending(&authRequest{client: p.ClientID(), redirectURI: testRedirect, state: "s"})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(ConsentLifetime)
	resp, err := noRedirects(p).PostForm(p.URL()+"/authorize/decision", url.Values{"form_token": {tok}, "decision": {"allow"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("expired form: %d", resp.StatusCode)
	}
}

// TestExtraClient: a second registered client gets its own codes and
// tokens; the default client can neither redeem nor refresh them.
func TestExtraClient(t *testing.T) {
	p := start(t, Config{AuthStyle: oauth.AuthStyleBody})
	p.AddClient("byo-app", "byo-secret")
	code := approvedCode(t, p, func(q url.Values) { q.Set("client_id", "byo-app") })
	post := func(id, sec string, form url.Values) tokenAnswer {
		form.Set("client_id", id)
		form.Set("client_secret", sec)
		resp, err := p.Client().PostForm(p.TokenURL(), form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return tokenAnswer{resp.StatusCode, body}
	}
	a := post("byo-app", "byo-secret", exchangeForm(code, testRedirect, rfcVerifier))
	if a.status != http.StatusOK {
		t.Fatalf("exchange: %d %v", a.status, a.body["error"])
	}
	at, rt := a.body["access_token"].(string), a.body["refresh_token"].(string)
	if got := p.TokenClient(secret.NewString(at)); got != "byo-app" {
		t.Fatalf("TokenClient = %q", got)
	}
	if p.LastAuthStyle() != oauth.AuthStyleBody {
		t.Fatalf("auth style %q", p.LastAuthStyle())
	}
	post(p.ClientID(), p.clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}).wantError(t, "invalid_grant")
	if a := post("byo-app", "byo-secret", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}); a.status != http.StatusOK {
		t.Fatalf("own refresh: %d %v", a.status, a.body["error"])
	}
	if a := post("byo-app", "wrong", url.Values{"grant_type": {"client_credentials"}}); a.status != http.StatusUnauthorized || a.body["error"] != "invalid_client" {
		t.Fatalf("wrong secret: %d %v", a.status, a.body["error"])
	}
	if TokenClientOfUnknown := p.TokenClient(secret.NewString("nope")); TokenClientOfUnknown != "" {
		t.Fatalf("TokenClient of an unknown token = %q", TokenClientOfUnknown)
	}
}

func TestClientCredentials(t *testing.T) {
	p := start(t, Config{})
	for i := range 2 {
		a := tokenPost(t, p, p.ClientID(), p.clientSecret, url.Values{"grant_type": {"client_credentials"}, "scope": {"reports.read"}})
		if a.status != http.StatusOK {
			t.Fatalf("client credentials: %d %v", a.status, a.body["error"])
		}
		at, _ := a.body["access_token"].(string)
		if _, has := a.body["refresh_token"]; has || a.body["scope"] != "reports.read" || !p.AccessTokenValid(secret.NewString(at)) {
			t.Fatalf("answer: refresh %v scope %v", has, a.body["scope"])
		}
		if p.TokenClient(secret.NewString(at)) != p.ClientID() || p.ClientCredentialsCount() != i+1 {
			t.Fatalf("client %q count %d", p.TokenClient(secret.NewString(at)), p.ClientCredentialsCount())
		}
	}
	a := tokenPost(t, p, p.ClientID(), "wrong", url.Values{"grant_type": {"client_credentials"}})
	if a.status != http.StatusUnauthorized || p.ClientCredentialsCount() != 3 {
		t.Fatalf("bad secret: %d, count %d", a.status, p.ClientCredentialsCount())
	}
	p.SetNextTokenError("temporarily_unavailable", http.StatusServiceUnavailable)
	if a := tokenPost(t, p, p.ClientID(), p.clientSecret, url.Values{"grant_type": {"client_credentials"}}); a.status != http.StatusServiceUnavailable {
		t.Fatalf("injected error: %d", a.status)
	}
}

// TestIssuerKnobsAndExtraFields: iss can be omitted or wrong; extra token
// fields reach code and refresh answers.
func TestIssuerKnobsAndExtraFields(t *testing.T) {
	p := start(t, Config{Issuer: "https://issuer.oauthtest.example"})
	if p.Issuer() != "https://issuer.oauthtest.example" {
		t.Fatalf("Issuer = %q", p.Issuer())
	}
	target, _ := p.Authorize(authURL(p, nil), true)
	if callback(t, target).Get("iss") != "https://issuer.oauthtest.example" {
		t.Fatalf("callback %q", target)
	}
	p.SetWrongIssuer(true)
	target, _ = p.Authorize(authURL(p, nil), false)
	if callback(t, target).Get("iss") != WrongIssuer {
		t.Fatalf("wrong issuer callback %q", target)
	}
	p.SetOmitIssuer(true)
	target, _ = p.Authorize(authURL(p, nil), true)
	if callback(t, target).Has("iss") {
		t.Fatalf("omitted issuer callback %q", target)
	}

	p.SetExtraTokenFields(map[string]string{"instance_url": "https://na1.example.test", "access_token": "never-overrides"})
	a := tokenPost(t, p, p.ClientID(), p.clientSecret, exchangeForm(approvedCode(t, p, nil), testRedirect, rfcVerifier))
	if a.body["instance_url"] != "https://na1.example.test" || a.body["access_token"] == "never-overrides" {
		t.Fatalf("code answer: %v", a.body["instance_url"])
	}
	a = tokenPost(t, p, p.ClientID(), p.clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {a.body["refresh_token"].(string)}})
	if a.status != http.StatusOK || a.body["instance_url"] != "https://na1.example.test" {
		t.Fatalf("refresh answer: %d %v", a.status, a.body["instance_url"])
	}
}

// TestRedirectURIWithQuery: a registered redirect URI's own query is kept.
func TestRedirectURIWithQuery(t *testing.T) {
	p := start(t, Config{})
	const withQuery = "http://127.0.0.1:9/cb?tenant=a"
	p.SetRedirectURIs(withQuery)
	target, err := p.Authorize(authURL(p, func(q url.Values) { q.Set("redirect_uri", withQuery) }), true)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(target)
	if u.Query().Get("tenant") != "a" || !strings.HasPrefix(u.Query().Get("code"), CodePrefix) || !strings.HasPrefix(target, withQuery+"&") {
		t.Fatalf("target %q", target)
	}
	if _, err := p.Authorize(authURL(p, nil), true); !errors.Is(err, ErrAuthorizeRefused) {
		t.Fatalf("replaced redirect URI still accepted: %v", err)
	}
}
