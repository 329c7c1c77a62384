package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// The connect flow in a real browser: headless Chromium opens the link,
// the fake provider's consent page appears, a click on Allow (or Deny)
// ends on the application's return_to page. Every hop's URL is recorded
// to show where the code and state went, and where they did not.

const chromiumPath = "/usr/bin/chromium"

// appServer is the application a connect flow returns to: it records the
// URL and Referer of every request it gets.
type appServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits []appHit
}

type appHit struct {
	URL     string // path and query as received
	Referer string
}

func newAppServer(t *testing.T) *appServer {
	t.Helper()
	a := &appServer{}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.hits = append(a.hits, appHit{URL: r.URL.RequestURI(), Referer: r.Header.Get("Referer")})
		a.mu.Unlock()
		if r.URL.Path != "/app/done" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(`<!doctype html><html><head><title>app</title></head><body><p id="app">back in the app</p></body></html>`))
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *appServer) recorded() []appHit {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]appHit(nil), a.hits...)
}

// requireChromium skips without a browser unless VAULTD_REQUIRE_BROWSER is
// set (scripts/test.sh sets it, so CI never skips silently).
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("VAULTD_REQUIRE_BROWSER") != "" {
			t.Fatalf("VAULTD_REQUIRE_BROWSER is set but %s is missing: %v (scripts/deps.sh installs it)", chromiumPath, err)
		}
		t.Skipf("%s not installed (apt-get install chromium); set VAULTD_REQUIRE_BROWSER=1 to make this a failure", chromiumPath)
	}
}

// chromium starts a fresh headless Chromium (its own profile in a temp
// dir) and records the URL of every request and navigation of its tab.
func chromium(t *testing.T) (ctx context.Context, hops func() []string) {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		// Throwaway certificates for 127.0.0.1 (vaultd's test CA, the
		// fake provider's and the app's httptest certificates).
		chromedp.Flag("ignore-certificate-errors", true),
	}
	actx, acancel := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(acancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	var mu sync.Mutex
	var urls []string
	// Listen starts the browser: no timeout on this first call (it would
	// stop the browser with it).
	err := chromedp.Listen(ctx, func(ev any) {
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			mu.Lock()
			urls = append(urls, e.Request.URL+e.Request.URLFragment)
			mu.Unlock()
		case *page.EventFrameNavigated:
			mu.Lock()
			urls = append(urls, e.Frame.URL+e.Frame.URLFragment)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), urls...)
	}
}

// browserFlow opens link in a fresh Chromium, clicks button (#allow or
// #deny) on the consent page and waits for the app's page; it returns the
// final location and every URL the tab requested or navigated to.
func browserFlow(t *testing.T, link, button string) (final string, hops []string) {
	t.Helper()
	ctx, allHops := chromium(t)
	tctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	err := chromedp.Do(tctx,
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.ID(button)),
		chromedp.Click(chromedp.ID(button)),
		chromedp.WaitVisible(chromedp.ID("app")),
	)
	if err != nil {
		t.Fatalf("browser flow (%s): %v\nhops: %q", button, err, allHops())
	}
	final, err = chromedp.Run(tctx, chromedp.Location())
	if err != nil {
		t.Fatalf("location: %v", err)
	}
	return final, allHops()
}

// TestBrowserConnect runs the connect flow in headless Chromium: Allow
// ends completed with an integration that proxies, Deny ends failed with
// access_denied; the application never sees a code, state or token.
func TestBrowserConnect(t *testing.T) {
	requireChromium(t)
	app := newAppServer(t)
	appDone := app.srv.URL + "/app/done"
	c := newConnectEnv(t, connectOptions{ReturnTo: []string{app.srv.URL + "/app/"}})
	c.CreateTenant("acme")

	// checkHops: the callback hop carried code and state to vaultd's
	// callback only; nothing the app received (URL or Referer) carries a
	// code, the state, the link, a token or the PKCE challenge.
	checkHops := func(t *testing.T, link string, hops []string, wantCode bool) {
		t.Helper()
		var state, challenge, code string
		for _, h := range hops {
			switch {
			case strings.HasPrefix(h, c.Provider.AuthorizationURL()+"?"):
				state, challenge = queryValue(t, h, "state"), queryValue(t, h, "code_challenge")
				if queryValue(t, h, "code_challenge_method") != "S256" || queryValue(t, h, "redirect_uri") != c.Callback {
					t.Errorf("authorization request %s", h)
				}
			case strings.HasPrefix(h, c.Callback+"?"):
				if queryValue(t, h, "state") == "" || (wantCode && queryValue(t, h, "code") == "") {
					t.Errorf("callback hop without code and state: %s", h)
				}
				if code == "" {
					code = queryValue(t, h, "code")
				}
			}
		}
		if state == "" || challenge == "" {
			t.Fatalf("no authorization request among the hops %q", hops)
		}
		if wantCode && !strings.HasPrefix(code, "oauthtest-code-") {
			t.Fatalf("no callback with a code among the hops %q", hops)
		}
		secrets := append([]string{state, challenge, link[strings.LastIndex(link, "/")+1:], "code=", "state="}, tokenPrefixes...)
		if code != "" {
			secrets = append(secrets, code)
		}
		for _, h := range hops {
			if !strings.HasPrefix(h, app.srv.URL) {
				continue
			}
			if f := secretsIn(h, secrets); len(f) > 0 {
				t.Errorf("a URL sent to the application carries %v: %s", f, h)
			}
		}
		for _, hit := range app.recorded() {
			if f := secretsIn(hit.URL+" "+hit.Referer, secrets); len(f) > 0 {
				t.Errorf("the application received %v: %+v", f, hit)
			}
			if hit.Referer != "" && !strings.HasPrefix(hit.Referer, app.srv.URL) {
				t.Errorf("the application got a Referer from another origin: %q", hit.Referer)
			}
		}
	}

	t.Run("allow", func(t *testing.T) {
		id, link := c.startSession(t, AppAcme, map[string]any{
			"integration_id": "crm", "provider": ProviderName, "scopes": []string{"contacts.read"}, "return_to": appDone,
		})
		final, hops := browserFlow(t, link, "allow")
		u, err := url.Parse(final)
		must(t, err)
		q := u.Query()
		if u.Scheme+"://"+u.Host+u.Path != appDone || q.Get("status") != "completed" || q.Get("connect_session") != id || len(q) != 2 {
			t.Fatalf("landed on %s", final)
		}
		checkHops(t, link, hops, true)
		if status, _ := c.sessionStatus(t, id); status != "completed" {
			t.Fatalf("session %s", status)
		}
		md, err := c.Client(AppAcme).GetIntegration(t.Context(), "crm")
		must(t, err)
		if md.Status != "active" || md.Provider != ProviderName {
			t.Fatalf("metadata %+v", md)
		}
		if r := obProxy(t, c.Env, c.HTTP(AppAcme), "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("proxy through the browser-connected integration: %d %s", r.Status, r.Body)
		}
	})

	t.Run("deny", func(t *testing.T) {
		id, link := c.startSession(t, AppAcme, map[string]any{
			"integration_id": "crm-denied", "provider": ProviderName, "return_to": appDone,
		})
		final, hops := browserFlow(t, link, "deny")
		u, err := url.Parse(final)
		must(t, err)
		q := u.Query()
		if u.Scheme+"://"+u.Host+u.Path != appDone || q.Get("status") != "failed" || q.Get("error") != "access_denied" ||
			q.Get("connect_session") != id || len(q) != 3 {
			t.Fatalf("landed on %s", final)
		}
		checkHops(t, link, hops, false)
		if status, errCode := c.sessionStatus(t, id); status != "failed" || errCode != "access_denied" {
			t.Fatalf("session %s %s", status, errCode)
		}
		if _, err := c.Client(AppAcme).GetIntegration(t.Context(), "crm-denied"); err == nil {
			t.Fatal("a denied flow stored an integration")
		}
	})
}
