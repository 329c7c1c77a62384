package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestConnectExpiry: on the real binary, with a one-second session_ttl, a
// session nobody finished reads "expired" once its time is up, and its
// link then answers a page (410), not a redirect to the provider; a link
// opened in time whose callback comes back after expiry is refused too.
func TestConnectExpiry(t *testing.T) {
	c := newConnectEnv(t, connectOptions{SessionTTL: "1s"})
	c.CreateTenant("acme")
	body := func(integ string) map[string]any {
		return map[string]any{"integration_id": integ, "provider": ProviderName, "return_to": connectReturnTo}
	}
	unopened, link := c.startSession(t, AppAcme, body("crm"))
	opened, link2 := c.startSession(t, AppAcme, body("crm2"))
	b := c.browser(t)
	authURL, _ := c.openLink(t, b, link2)
	cbURL := c.consent(t, authURL, true)

	// Wait (bounded; nothing about the timing is asserted) until vaultd
	// says the sessions expired.
	deadline := time.Now().Add(30 * time.Second)
	for _, id := range []string{unopened, opened} {
		for {
			st, _ := c.sessionStatus(t, id)
			if st == "expired" {
				break
			}
			if st != "pending" || time.Now().After(deadline) {
				t.Fatalf("session status %q, want pending then expired", st)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	r := c.visit(t, c.browser(t), link)
	wantStatus(t, r, http.StatusGone)
	if r.Header.Get("Location") != "" || !strings.Contains(string(r.Body), "expired") {
		t.Fatalf("expired link: Location %q, page %s", r.Header.Get("Location"), r.Body)
	}
	wantBrowserHeaders(t, "expired link", r)

	// The opened one: the provider sends the browser back too late.
	r = c.visit(t, b, cbURL)
	wantStatus(t, r, http.StatusBadRequest)
	if r.Header.Get("Location") != "" {
		t.Fatalf("late callback redirected to %q", r.Header.Get("Location"))
	}
	if st, _ := c.sessionStatus(t, opened); st != "expired" {
		t.Fatalf("late session status %q", st)
	}
	if n := c.Provider.CodeExchangeCount(); n != 0 {
		t.Fatalf("%d code exchanges after expiry", n)
	}
	r = do(t, c.HTTP(AppAcme), http.MethodGet, c.API+"/v1/integrations/crm2", nil)
	wantStatus(t, r, http.StatusNotFound)
}
