package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
)

// The connect flow on the real binary: vaultd runs the authorization-code
// flow with PKCE itself; the tests play the browser (a cookie jar, each
// redirect looked at) and the user at the fake provider (Authorize).

// bearerRecorder is a provider API that accepts any bearer token and
// records it, so a test can ask the fake provider which client a token
// vaultd used was issued to. It answers 401 to the next reject calls.
type bearerRecorder struct {
	srv    *httptest.Server
	mu     sync.Mutex
	tokens []string
	reject atomic.Int32
}

func newBearerRecorder(t *testing.T) *bearerRecorder {
	t.Helper()
	r := &bearerRecorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if !ok {
			http.Error(w, "no bearer", http.StatusUnauthorized)
			return
		}
		r.mu.Lock()
		r.tokens = append(r.tokens, tok)
		r.mu.Unlock()
		if r.reject.Add(-1) >= 0 {
			http.Error(w, "token rejected", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *bearerRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.tokens...)
}

func (r *bearerRecorder) last(t *testing.T) secret.String {
	t.Helper()
	all := r.all()
	if len(all) == 0 {
		t.Fatal("the recorder saw no call")
	}
	return secret.NewString(all[len(all)-1])
}

// byoSecret is the per-integration client's secret: it must never come
// back out of vaultd.
const byoSecret = "byo-secret-7f3c9a1e-never-answered"

// connectProviders are the providers of TestConnect besides example:
// one without authorization_url, one whose API is a bearer recorder
// (per-integration client), a client-credentials one, and two catalog
// templates whose URLs the file points at the fake provider.
func connectProviders(recorderURL string) string {
	return `
[providers.noauth]
token_url          = "%[1]s/token"
api_base_url       = "%[1]s/api"
client_id          = "oauthtest-client"
client_secret_file = %[3]q
ca_file            = %[2]q
scopes             = ["contacts.read"]

[providers.byo]
authorization_url  = "%[1]s/authorize"
token_url          = "%[1]s/token"
revocation_url     = "%[1]s/revoke"
api_base_url       = "` + recorderURL + `/byo"
client_id          = "oauthtest-client"
client_secret_file = %[3]q
ca_file            = %[2]q
scopes             = ["contacts.read"]

[providers.cc]
grant              = "client_credentials"
token_url          = "%[1]s/token"
api_base_url       = "` + recorderURL + `/cc"
client_id          = "oauthtest-client"
client_secret_file = %[3]q
ca_file            = %[2]q
scopes             = ["reports.read", "reports.write"]

[providers.sf]
template           = "salesforce"
authorization_url  = "%[1]s/authorize"
token_url          = "%[1]s/token"
revocation_url     = "%[1]s/revoke"
auth_style         = "basic"
client_id          = "oauthtest-client"
client_secret_file = %[3]q
ca_file            = %[2]q
scopes             = ["api", "refresh_token"]

[providers.zd]
template           = "zendesk"
authorization_url  = "%[1]s/authorize"
token_url          = "%[1]s/token"
auth_style         = "basic"
client_id          = "oauthtest-client"
client_secret_file = %[3]q
ca_file            = %[2]q
scopes             = ["read", "write"]
`
}

// randomLink is a well-formed link secret vaultd never issued.
func randomLink() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestConnect walks the connect flow through the real binary: session
// validation, success, replay, another browser, a denial, a per-integration
// client, catalog templates, the security headers of every browser answer,
// and finally that no code, state, link or token leaked anywhere.
func TestConnect(t *testing.T) {
	rec := newBearerRecorder(t)
	c := newConnectEnv(t, connectOptions{Providers: connectProviders(rec.srv.URL)})
	c.CreateTenant("acme")
	c.CreateTenant("globex")
	ctx := t.Context()
	// Everything secret the flows handle, for the final leak check.
	var secrets []string
	var smu sync.Mutex
	keep := func(s ...string) { smu.Lock(); secrets = append(secrets, s...); smu.Unlock() }
	keep(byoSecret)
	linkSecret := func(link string) string { return link[strings.LastIndex(link, "/")+1:] }

	t.Run("session_validation", func(t *testing.T) {
		good := func() map[string]any {
			return map[string]any{"integration_id": "crm", "provider": ProviderName, "scopes": []string{"contacts.read"}, "return_to": connectReturnTo}
		}
		for name, edit := range map[string]func(m map[string]any){
			"scope outside the inventory": func(m map[string]any) { m["scopes"] = []string{"contacts.read", "admin.all"} },
			"unknown provider":            func(m map[string]any) { m["provider"] = "nope" },
			"no authorization_url":        func(m map[string]any) { m["provider"] = "noauth" },
			"client credentials provider": func(m map[string]any) { m["provider"] = "cc" },
			"return_to other host":        func(m map[string]any) { m["return_to"] = "https://evil.example.net/done" },
			"return_to suffix host":       func(m map[string]any) { m["return_to"] = "https://app.example.com.evil.net/done" },
			"return_to http":              func(m map[string]any) { m["return_to"] = "http://app.example.com/done" },
			"return_to dot segments":      func(m map[string]any) { m["return_to"] = "https://app.example.com/a/../../x" },
			"bad integration id":          func(m map[string]any) { m["integration_id"] = "-bad id" },
			"params for a plain provider": func(m map[string]any) { m["params"] = map[string]string{"subdomain": "acme"} },
			"template param missing":      func(m map[string]any) { m["provider"] = "zd"; m["scopes"] = []string{"read"} },
			"template param invalid": func(m map[string]any) {
				m["provider"], m["scopes"], m["params"] = "zd", []string{"read"}, map[string]string{"subdomain": "evil.com/x"}
			},
		} {
			t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
				m := good()
				edit(m)
				wantError(t, c.createSession(t, AppAcme, m), http.StatusBadRequest, "bad_request")
			})
		}

		id, link := c.startSession(t, AppAcme, good())
		keep(linkSecret(link))
		if status, _ := c.sessionStatus(t, id); status != "pending" {
			t.Fatalf("new session status %q", status)
		}
		if n := len(auditWhere(t, c.Env, func(ev map[string]any) bool {
			return ev["action"] == "connect.start" && ev["outcome"] == "success" && strings.Contains(ev["detail"].(string), "connect_session="+id)
		})); n != 1 {
			t.Fatalf("%d connect.start events for %s", n, id)
		}
		// Another tenant's session answers exactly like a missing one.
		foreign := c.session(t, AppGlobex, id)
		missing := c.session(t, AppGlobex, "cs-"+strings.Repeat("a", 24))
		wantError(t, foreign, http.StatusNotFound, "not_found")
		sameAsMissing(t, "foreign session", foreign, missing)
	})

	t.Run("success_replay_reuse", func(t *testing.T) {
		b := c.browser(t)
		id, link := c.startSession(t, AppAcme, map[string]any{
			"integration_id": "crm", "provider": ProviderName, "scopes": []string{"contacts.read"},
			"return_to": connectReturnTo + "?tab=crm",
		})
		keep(linkSecret(link))
		authURL, open := c.openLink(t, b, link)
		q := func(k string) string { return queryValue(t, authURL, k) }
		for k, want := range map[string]string{
			"response_type": "code", "client_id": c.Provider.ClientID(), "redirect_uri": c.Callback,
			"scope": "contacts.read", "code_challenge_method": "S256", "access_type": "offline",
		} {
			if got := q(k); got != want {
				t.Errorf("authorization request %s=%q, want %q", k, got, want)
			}
		}
		if len(q("state")) < 32 || len(q("code_challenge")) != 43 {
			t.Fatalf("state %d chars, code_challenge %d chars", len(q("state")), len(q("code_challenge")))
		}
		keep(q("state"))
		cookies := (&http.Response{Header: open.Header}).Cookies()
		if len(cookies) != 1 {
			t.Fatalf("open link set %d cookies", len(cookies))
		}
		ck := cookies[0]
		if ck.Name != "__Host-vaultd-connect-"+id || !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || ck.Domain != "" {
			t.Fatalf("binding cookie %+v", ck)
		}
		keep(ck.Value)

		cbURL := c.consent(t, authURL, true)
		code := queryValue(t, cbURL, "code")
		if !strings.HasPrefix(code, "oauthtest-code-") {
			t.Fatalf("callback has no code: %s", cbURL)
		}
		keep(code)
		ret := c.returnTo(t, c.visit(t, b, cbURL), connectReturnTo)
		if ret.Get("connect_session") != id || ret.Get("status") != "completed" || ret.Get("tab") != "crm" || len(ret) != 3 {
			t.Fatalf("return_to query %v", ret)
		}
		if status, errCode := c.sessionStatus(t, id); status != "completed" || errCode != "" {
			t.Fatalf("session %s %q", status, errCode)
		}
		if n := c.Provider.CodeExchangeCount(); n != 1 {
			t.Fatalf("%d code exchanges", n)
		}
		md, err := c.Client(AppAcme).GetIntegration(ctx, "crm")
		must(t, err)
		if md.Provider != ProviderName || md.Status != "active" || len(md.Scopes) != 1 || md.Scopes[0] != "contacts.read" {
			t.Fatalf("metadata %+v", md)
		}
		if r := obProxy(t, c.Env, c.HTTP(AppAcme), "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("proxy through the connected integration: %d %s", r.Status, r.Body)
		}
		for _, a := range []string{"connect.start", "connect.open", "connect.callback", "token.store"} {
			evs := auditWhere(t, c.Env, func(ev map[string]any) bool {
				return ev["action"] == a && ev["outcome"] == "success" && ev["tenant_id"] == "acme" &&
					strings.Contains(ev["detail"].(string), "connect_session="+id)
			})
			if len(evs) != 1 {
				t.Fatalf("%d %s events naming %s", len(evs), a, id)
			}
		}

		// The same callback again (a replay, or a second tab): refused, the
		// code is not spent twice, and the refusal is audited.
		// Whether the refusal names the session or not is the service's
		// choice: count every denied connect.fail.
		denied := func(ev map[string]any) bool { return ev["action"] == "connect.fail" && ev["outcome"] == "denied" }
		deniedBefore := len(auditWhere(t, c.Env, denied))
		r := c.visit(t, b, cbURL)
		if r.Status != http.StatusBadRequest || r.Header.Get("Location") != "" || !strings.Contains(r.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("replayed callback: %d Location=%q", r.Status, r.Header.Get("Location"))
		}
		if got := len(auditWhere(t, c.Env, denied)); got != deniedBefore+1 {
			t.Fatalf("replay: %d denied connect.fail events, want %d", got, deniedBefore+1)
		}
		if n := c.Provider.CodeExchangeCount(); n != 1 {
			t.Fatalf("replay reached the token endpoint: %d code exchanges", n)
		}
		// The link again: used up (a 400 or 410 page), no redirect, no
		// new cookie.
		r = c.visit(t, b, link)
		if (r.Status != http.StatusGone && r.Status != http.StatusBadRequest) || r.Header.Get("Location") != "" ||
			len(r.Header.Values("Set-Cookie")) != 0 || !strings.Contains(r.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("reused link: %d Location=%q", r.Status, r.Header.Get("Location"))
		}
	})

	t.Run("refused_pages", func(t *testing.T) {
		b := c.browser(t)
		for path, want := range map[string]int{
			"/connect/" + randomLink(): http.StatusBadRequest, // never issued
			"/connect/short":           http.StatusBadRequest,
			"/oauth/callback":          http.StatusBadRequest,
			"/oauth/callback?code=oauthtest-code-x&state=" + randomLink(): http.StatusBadRequest,
			"/":        http.StatusNotFound,
			"/v1/x":    http.StatusNotFound,
			"/connect": http.StatusNotFound,
		} {
			r := c.visit(t, b, c.Public+path)
			if r.Status != want || r.Header.Get("Location") != "" || len(r.Header.Values("Set-Cookie")) != 0 {
				t.Errorf("GET %s: %d Location=%q, want %d and no redirect", path, r.Status, r.Header.Get("Location"), want)
			}
		}
		// Other methods are refused with the same headers.
		r := do(t, b, http.MethodPost, c.Public+"/oauth/callback", []byte(`{}`))
		wantBrowserHeaders(t, "POST /oauth/callback", r)
		if r.Status != http.StatusMethodNotAllowed {
			t.Fatalf("POST callback: %d", r.Status)
		}
	})

	t.Run("other_browser", func(t *testing.T) {
		mine, other := c.browser(t), c.browser(t)
		id, link := c.startSession(t, AppAcme, map[string]any{"integration_id": "crm2", "provider": ProviderName, "return_to": connectReturnTo})
		keep(linkSecret(link))
		authURL, _ := c.openLink(t, mine, link)
		keep(queryValue(t, authURL, "state"))
		cbURL := c.consent(t, authURL, true)
		keep(queryValue(t, cbURL, "code"))
		exchanges := c.Provider.CodeExchangeCount()

		r := c.visit(t, other, cbURL)
		if r.Status != http.StatusBadRequest || r.Header.Get("Location") != "" {
			t.Fatalf("callback in another browser: %d Location=%q", r.Status, r.Header.Get("Location"))
		}
		if status, _ := c.sessionStatus(t, id); status != "pending" {
			t.Fatalf("after another browser's callback the session is %s", status)
		}
		if n := len(auditWhere(t, c.Env, func(ev map[string]any) bool {
			return ev["action"] == "connect.fail" && ev["outcome"] == "denied" && ev["integration_id"] == "crm2" &&
				strings.Contains(ev["detail"].(string), "connect_session="+id)
		})); n != 1 {
			t.Fatalf("%d denied connect.fail events for the other browser", n)
		}
		if c.Provider.CodeExchangeCount() != exchanges {
			t.Fatal("another browser's callback spent the code")
		}
		if _, err := c.Client(AppAcme).GetIntegration(ctx, "crm2"); err == nil {
			t.Fatal("another browser's callback stored an integration")
		}
		// The browser that opened the link still completes.
		ret := c.returnTo(t, c.visit(t, mine, cbURL), connectReturnTo)
		if ret.Get("status") != "completed" || ret.Get("connect_session") != id {
			t.Fatalf("return_to query %v", ret)
		}
	})

	t.Run("access_denied", func(t *testing.T) {
		b := c.browser(t)
		id, link := c.startSession(t, AppAcme, map[string]any{"integration_id": "denied", "provider": ProviderName, "return_to": connectReturnTo})
		keep(linkSecret(link))
		cbURL, r := c.connectFlow(t, b, link, false)
		keep(queryValue(t, cbURL, "state"))
		ret := c.returnTo(t, r, connectReturnTo)
		if ret.Get("status") != "failed" || ret.Get("error") != "access_denied" || ret.Get("connect_session") != id || len(ret) != 3 {
			t.Fatalf("return_to query %v", ret)
		}
		if status, errCode := c.sessionStatus(t, id); status != "failed" || errCode != "access_denied" {
			t.Fatalf("session %s %q", status, errCode)
		}
		if _, err := c.Client(AppAcme).GetIntegration(ctx, "denied"); err == nil {
			t.Fatal("a denied flow stored an integration")
		}
		if n := len(auditWhere(t, c.Env, func(ev map[string]any) bool {
			return ev["action"] == "connect.fail" && ev["integration_id"] == "denied" && strings.Contains(ev["detail"].(string), "access_denied")
		})); n != 1 {
			t.Fatalf("%d connect.fail events for the denial", n)
		}
	})

	t.Run("per_integration_client", func(t *testing.T) {
		c.Provider.AddClient("byo-app", byoSecret)
		b := c.browser(t)
		id, link := c.startSession(t, AppAcme, map[string]any{
			"integration_id": "byo", "provider": "byo", "return_to": connectReturnTo,
			"client": map[string]string{"client_id": "byo-app", "client_secret": byoSecret},
		})
		keep(linkSecret(link))
		authURL, _ := c.openLink(t, b, link)
		if got := queryValue(t, authURL, "client_id"); got != "byo-app" {
			t.Fatalf("authorization request client_id %q, want the integration's own", got)
		}
		cbURL := c.consent(t, authURL, true)
		keep(queryValue(t, cbURL, "code"), queryValue(t, cbURL, "state"))
		ret := c.returnTo(t, c.visit(t, b, cbURL), connectReturnTo)
		if ret.Get("status") != "completed" || ret.Get("connect_session") != id {
			t.Fatalf("return_to query %v", ret)
		}
		hc := c.HTTP(AppAcme)
		if r := obProxy(t, c.Env, hc, "byo", http.MethodGet, "x", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("proxy: %d %s", r.Status, r.Body)
		}
		first := rec.last(t)
		if got := c.Provider.TokenClient(first); got != "byo-app" {
			t.Fatalf("the exchanged token belongs to client %q, want byo-app", got)
		}
		// The upstream rejects the token once: vaultd refreshes, with the
		// integration's client (the fake refuses any other for this grant).
		refreshes := c.Provider.RefreshCount()
		rec.reject.Store(1)
		if r := obProxy(t, c.Env, hc, "byo", http.MethodGet, "x", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("proxy after a 401: %d %s\n%s", r.Status, r.Body, c.Logs())
		}
		second := rec.last(t)
		if c.Provider.RefreshCount() != refreshes+1 || second.Equal(first) {
			t.Fatal("no refresh after the upstream's 401")
		}
		if got := c.Provider.TokenClient(second); got != "byo-app" {
			t.Fatalf("the refreshed token belongs to client %q, want byo-app", got)
		}
		for _, tok := range rec.all() {
			keep(tok)
		}
		// The client is never answered.
		for _, r := range []apiResp{
			do(t, hc, http.MethodGet, c.API+"/v1/integrations/byo", nil),
			do(t, hc, http.MethodGet, c.API+"/v1/integrations", nil),
			c.session(t, AppAcme, id),
		} {
			if strings.Contains(string(r.Body), byoSecret) || strings.Contains(string(r.Body), "client_secret") {
				t.Fatalf("an answer carries the client: %s", r.Body)
			}
		}
	})

	t.Run("templates", func(t *testing.T) {
		defer c.Provider.SetExtraTokenFields(nil)
		flow := func(t *testing.T, integ, provider string, params map[string]string, instanceURL string) (string, map[string][]string) {
			t.Helper()
			c.Provider.SetExtraTokenFields(map[string]string{"instance_url": instanceURL})
			body := map[string]any{"integration_id": integ, "provider": provider, "return_to": connectReturnTo}
			if params != nil {
				body["params"] = params
			}
			id, link := c.startSession(t, AppAcme, body)
			keep(linkSecret(link))
			cbURL, r := c.connectFlow(t, c.browser(t), link, true)
			keep(queryValue(t, cbURL, "code"), queryValue(t, cbURL, "state"))
			return id, c.returnTo(t, r, connectReturnTo)
		}
		// Salesforce: the API host comes from instance_url, within
		// *.my.salesforce.com / *.salesforce.com.
		_, ret := flow(t, "sfdc", "sf", nil, "https://acme.my.salesforce.com")
		if ret["status"][0] != "completed" {
			t.Fatalf("salesforce flow: %v", ret)
		}
		md, err := c.Client(AppAcme).GetIntegration(ctx, "sfdc")
		must(t, err)
		if md.APIBaseURL != "https://acme.my.salesforce.com/services/data" {
			t.Fatalf("salesforce api_base_url %q", md.APIBaseURL)
		}
		// A hostile instance_url: the session fails and nothing is stored.
		for _, host := range []string{"https://evil.example.net", "https://acme.my.salesforce.com.evil.net", "http://acme.my.salesforce.com"} {
			id, ret := flow(t, "sfdc-evil", "sf", nil, host)
			if ret["status"][0] != "failed" || ret["error"][0] == "" {
				t.Fatalf("hostile instance_url %s: %v", host, ret)
			}
			if status, _ := c.sessionStatus(t, id); status != "failed" {
				t.Fatalf("hostile instance_url %s: session %s", host, status)
			}
			if _, err := c.Client(AppAcme).GetIntegration(ctx, "sfdc-evil"); err == nil {
				t.Fatalf("hostile instance_url %s: the token was stored", host)
			}
		}
		// Zendesk: the subdomain param fixes the API base.
		_, ret = flow(t, "zendesk", "zd", map[string]string{"subdomain": "acme"}, "")
		if ret["status"][0] != "completed" {
			t.Fatalf("zendesk flow: %v", ret)
		}
		md, err = c.Client(AppAcme).GetIntegration(ctx, "zendesk")
		must(t, err)
		if md.APIBaseURL != "https://acme.zendesk.com/api/v2" {
			t.Fatalf("zendesk api_base_url %q", md.APIBaseURL)
		}
		// The egress boundary is that base: a proxied call cannot be
		// pointed anywhere else (it fails to connect to the real host, or
		// is refused; it never reaches the fake provider's API).
		before := len(c.Provider.APIRequests())
		_ = obProxy(t, c.Env, c.HTTP(AppAcme), "zendesk", http.MethodGet, "tickets", nil, nil)
		if len(c.Provider.APIRequests()) != before {
			t.Fatal("a zendesk integration's call reached another API")
		}
	})

	t.Run("no_secret_leaks", func(t *testing.T) {
		all := append(append([]string(nil), tokenPrefixes...), secrets...)
		c.mu.Lock()
		seen := strings.Join(c.seen, "\n")
		c.mu.Unlock()
		for _, loc := range strings.Split(seen, "\n") {
			if strings.HasPrefix(loc, "Location: https://app.example.com") {
				if f := secretsIn(loc, all); len(f) > 0 {
					t.Errorf("return_to redirect %q carries %v", loc, f)
				}
			}
		}
		// Pages (and every answer) except the hop to the provider, whose
		// Location carries the state by design.
		for _, s := range c.seen {
			if strings.HasPrefix(s, "302\n") {
				continue
			}
			if f := secretsIn(s, all); len(f) > 0 {
				t.Errorf("a connect listener answer carries %v:\n%s", f, s)
			}
		}
		if f := secretsIn(c.Logs(), all); len(f) > 0 {
			t.Errorf("vaultd's log carries %v", f)
		}
		var sb strings.Builder
		must(t, c.Client(Auditor).Audit(ctx, clientAuditAll(), &sb))
		if f := secretsIn(sb.String(), all); len(f) > 0 {
			t.Errorf("the audit export carries %v", f)
		}
		if c.AuditPath != "" {
			mirror, err := os.ReadFile(c.AuditPath)
			must(t, err)
			if f := secretsIn(string(mirror), all); len(f) > 0 {
				t.Errorf("the audit mirror carries %v", f)
			}
		}
		must(t, c.Stop())
		db, err := os.ReadFile(c.DBPath)
		must(t, err)
		if f := secretsIn(string(db), all); len(f) > 0 {
			t.Errorf("the database file carries %v", f)
		}
		if f := secretsIn(c.Logs(), all); len(f) > 0 {
			t.Errorf("vaultd's log (after the drain) carries %v", f)
		}
	})
}

// TestClientCredentials: vaultd obtains and renews client-credentials
// tokens itself; 1,000 concurrent callers on an expired token make exactly
// one token call; a per-integration client is used for both; a refused
// client marks the integration reauthorization_required.
func TestClientCredentials(t *testing.T) {
	rec := newBearerRecorder(t)
	c := newConnectEnv(t, connectOptions{Providers: connectProviders(rec.srv.URL)})
	c.CreateTenant("acme")
	hc := c.HTTP(AppAcme)
	put := func(t *testing.T, id string, body map[string]any) apiResp {
		t.Helper()
		b, err := json.Marshal(body)
		must(t, err)
		return do(t, hc, http.MethodPut, c.API+"/v1/integrations/"+id, b)
	}

	t.Run("expired_token_storm", func(t *testing.T) {
		c.Provider.SetExpiresIn(1)
		before := c.Provider.ClientCredentialsCount()
		r := put(t, "svc", map[string]any{"provider": "cc", "scopes": []string{"reports.read"}})
		c.Provider.SetExpiresIn(3600)
		wantStatus(t, r, http.StatusOK)
		m := jsonObject(t, r.Body)
		if m["grant"] != "client_credentials" || m["status"] != "active" {
			t.Fatalf("cc integration %s", r.Body)
		}
		for _, k := range []string{"access_token", "oauthtest-at-"} {
			if strings.Contains(string(r.Body), k) {
				t.Fatalf("the store answer carries %s: %s", k, r.Body)
			}
		}
		if got := c.Provider.ClientCredentialsCount() - before; got != 1 {
			t.Fatalf("%d client_credentials calls to connect", got)
		}
		// Wait (bounded) until the stored token has expired on the wall
		// clock: vaultd's own clock cannot be moved from here.
		exp, err := time.Parse(time.RFC3339Nano, m["expires_at"].(string))
		must(t, err)
		for time.Now().Before(exp.Add(50 * time.Millisecond)) {
			time.Sleep(50 * time.Millisecond)
		}
		// Hold the renewal at the provider until every caller has sent its
		// request: they all queue behind the one renewal.
		entered, release := c.Provider.Hold("token")
		defer release()
		const n = 1000
		statuses := make([]int, n)
		var wg, sent sync.WaitGroup
		sent.Add(n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, c.API+"/v1/integrations/svc/proxy/report", nil)
				sent.Done()
				resp, err := hc.Do(req)
				if err != nil {
					statuses[i] = -1
					return
				}
				resp.Body.Close()
				statuses[i] = resp.StatusCode
			}()
		}
		select {
		case <-entered:
		case <-time.After(60 * time.Second):
			t.Fatal("no renewal reached the provider")
		}
		sent.Wait()
		release()
		wg.Wait()
		for i, s := range statuses {
			if s != http.StatusOK {
				t.Fatalf("caller %d: status %d\n%s", i, s, c.Logs())
			}
		}
		if got := c.Provider.ClientCredentialsCount() - before; got != 2 {
			t.Fatalf("%d client_credentials calls for %d callers on an expired token, want 1 to connect + exactly 1 renewal", got, n)
		}
		toks := rec.all()
		if len(toks) != n {
			t.Fatalf("upstream saw %d calls, want %d", len(toks), n)
		}
		for _, tok := range toks {
			if tok != toks[0] || !c.Provider.AccessTokenValid(secret.NewString(tok)) {
				t.Fatal("a caller went out with another token than the renewed one")
			}
		}
		if got := c.Provider.TokenClient(secret.NewString(toks[0])); got != c.Provider.ClientID() {
			t.Fatalf("renewed token of client %q", got)
		}
		md, err := c.Client(AppAcme).GetIntegration(t.Context(), "svc")
		must(t, err)
		if md.RefreshCount != 1 || md.Status != "active" || md.Grant != "client_credentials" {
			t.Fatalf("metadata %+v", md)
		}
	})

	t.Run("per_integration_client", func(t *testing.T) {
		c.Provider.AddClient("cc-own", byoSecret)
		c.Provider.SetExpiresIn(30) // inside the 60s margin: the next use renews
		r := put(t, "svc-own", map[string]any{"provider": "cc", "client": map[string]string{"client_id": "cc-own", "client_secret": byoSecret}})
		c.Provider.SetExpiresIn(3600)
		wantStatus(t, r, http.StatusOK)
		if strings.Contains(string(r.Body), byoSecret) || strings.Contains(string(r.Body), "cc-own") {
			t.Fatalf("the store answer carries the client: %s", r.Body)
		}
		before := len(rec.all())
		if r := obProxy(t, c.Env, hc, "svc-own", http.MethodGet, "report", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("proxy: %d %s", r.Status, r.Body)
		}
		if len(rec.all()) != before+1 {
			t.Fatal("the call did not reach the API")
		}
		if got := c.Provider.TokenClient(rec.last(t)); got != "cc-own" {
			t.Fatalf("renewed token of client %q, want cc-own", got)
		}
		md, err := c.Client(AppAcme).GetIntegration(t.Context(), "svc-own")
		must(t, err)
		if md.RefreshCount != 1 {
			t.Fatalf("metadata %+v: the use did not renew", md)
		}
	})

	t.Run("invalid_client", func(t *testing.T) {
		c.Provider.SetExpiresIn(30)
		r := put(t, "svc-dead", map[string]any{"provider": "cc"})
		c.Provider.SetExpiresIn(3600)
		wantStatus(t, r, http.StatusOK)
		c.Provider.SetNextTokenError("invalid_client", http.StatusUnauthorized)
		r2 := obProxy(t, c.Env, hc, "svc-dead", http.MethodGet, "report", nil, nil)
		if r2.Status != http.StatusConflict {
			t.Fatalf("proxy with a refused client: %d %s", r2.Status, r2.Body)
		}
		md, err := c.Client(AppAcme).GetIntegration(t.Context(), "svc-dead")
		must(t, err)
		if md.Status != "reauthorization_required" {
			t.Fatalf("status %q after invalid_client", md.Status)
		}
		// Connecting anew with a refused client: 409, nothing stored.
		c.Provider.SetNextTokenError("invalid_client", http.StatusUnauthorized)
		wantError(t, put(t, "svc-never", map[string]any{"provider": "cc"}), http.StatusConflict, "reauthorization_required")
		if _, err := c.Client(AppAcme).GetIntegration(t.Context(), "svc-never"); err == nil {
			t.Fatal("a refused client_credentials grant stored an integration")
		}
		// A token body for a provider that is not client_credentials is
		// still required.
		wantError(t, put(t, "needs-token", map[string]any{"provider": ProviderName}), http.StatusBadRequest, "bad_request")
	})
}
