package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// Callers who hang up once a token has left vaultd: the proxied call, the
// execute, the disconnect and the refresh still end audited and committed.
// (Regressions from an adversarial review; each failed before its fix.)

// auditCount counts the audit events (all tenants) that match.
func auditCount(t *testing.T, e *Env, match func(ev map[string]any) bool) int {
	t.Helper()
	n := 0
	for _, ev := range obAudit(t, e) {
		if match(ev) {
			n++
		}
	}
	return n
}

func evIs(integration, action, outcome string) func(map[string]any) bool {
	return func(ev map[string]any) bool {
		return ev["integration_id"] == integration && ev["action"] == action && (outcome == "" || ev["outcome"] == outcome)
	}
}

// hangUp sends req with a context it cancels as soon as entered fires
// (the provider is holding the call); it returns once the client call has
// ended.
func hangUp(t *testing.T, hc *http.Client, req *http.Request, entered <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		resp, err := hc.Do(req.WithContext(ctx))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case <-entered:
	case err := <-done:
		t.Fatalf("the call ended before the provider held it: %v", err)
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the cancelled call got an answer")
	}
}

func TestCallerHangUp(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	hc := e.HTTP(AppAcme)

	// The upstream got the call (and the bearer token) and the caller gave
	// up before the answer: the proxy.request event is still written.
	t.Run("proxy", func(t *testing.T) {
		e.Provider.SetExpiresIn(longLived)
		e.StoreToken(AppAcme, "hang-proxy")
		entered, release := e.Provider.Hold(oauthtest.HoldAPI)
		defer release()
		req, err := http.NewRequest(http.MethodPost, e.API+"/v1/integrations/hang-proxy/proxy/contacts", strings.NewReader(`{"a":1}`))
		must(t, err)
		hangUp(t, hc, req, entered)
		waitFor(t, func() bool { return auditCount(t, e, evIs("hang-proxy", "proxy.request", "")) == 1 })
	})
	t.Run("execute", func(t *testing.T) {
		e.StoreToken(AppAcme, "hang-exec")
		entered, release := e.Provider.Hold(oauthtest.HoldAPI)
		defer release()
		body, _ := json.Marshal(map[string]any{"method": "POST", "path": "contacts", "body": "x"})
		req, err := http.NewRequest(http.MethodPost, e.API+"/v1/integrations/hang-exec/execute", bytes.NewReader(body))
		must(t, err)
		hangUp(t, hc, req, entered)
		waitFor(t, func() bool { return auditCount(t, e, evIs("hang-exec", "proxy.request", "")) == 1 })
	})
	// The refresh token reached /revoke and the caller gave up: the
	// disconnect still ends with the revocations and the delete on record,
	// and the record gone.
	t.Run("disconnect", func(t *testing.T) {
		e.StoreToken(AppAcme, "hang-del")
		entered, release := e.Provider.Hold(oauthtest.HoldRevoke)
		req, err := http.NewRequest(http.MethodDelete, e.API+"/v1/integrations/hang-del", nil)
		must(t, err)
		hangUp(t, hc, req, entered)
		release()
		waitFor(t, func() bool {
			return auditCount(t, e, evIs("hang-del", "integration.delete", "success")) == 1
		})
		if n := auditCount(t, e, evIs("hang-del", "token.revoke", "")); n != 2 {
			t.Fatalf("token.revoke events: %d, want 2", n)
		}
		r := obDo(t, hc, http.MethodGet, e.API+"/v1/integrations/hang-del", nil, nil)
		wantError(t, apiResp{Status: r.Status, Header: r.Header, Body: r.Body}, http.StatusNotFound, "not_found")
	})
	// The provider rotates the refresh token and answers slowly; the caller
	// gives up. The refresh still commits: the integration stays active and
	// the next call works with no second refresh (it went degraded, then
	// reauthorization_required on invalid_grant).
	t.Run("refresh", func(t *testing.T) {
		e.Provider.SetRotation(true)
		refreshStore(t, e, "hang-refresh", 5) // inside the 60s margin
		before := e.Provider.RefreshCount()
		entered, release := e.Provider.Hold(oauthtest.HoldToken)
		req, err := http.NewRequest(http.MethodGet, e.API+"/v1/integrations/hang-refresh/proxy/contacts", nil)
		must(t, err)
		hangUp(t, hc, req, entered)
		release()
		waitFor(t, func() bool { return refreshMD(t, e, "hang-refresh").RefreshCount == 1 })
		if md := refreshMD(t, e, "hang-refresh"); md.Status != "active" {
			t.Fatalf("status after the hang-up: %q (%s)", md.Status, md.LastError)
		}
		r := obProxy(t, e, hc, "hang-refresh", http.MethodGet, "contacts", nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("next call: %d %s", r.Status, r.Body)
		}
		if got := e.Provider.RefreshCount() - before; got != 1 {
			t.Fatalf("token_url calls: %d, want 1", got)
		}
	})
}

// TestDeniedCallerHangUp: a refused request whose caller hangs up at once
// (request sent, connection closed) is still audited as auth.denied. The
// denial was written with the request's context, which the hang-up
// cancels, so a prober that never waits for its 403s left no trace: an
// unknown certificate, a principal without the route's role and an
// invalid tenant-context JWT alike.
func TestDeniedCallerHangUp(t *testing.T) {
	e := New(t, Options{})
	const n = 20
	for _, c := range []struct{ who, path, hdr, actor string }{
		{Stranger, "/v1/tenants", "", "stranger"},
		{AppAcme, "/v1/tenants", "", "app-acme"},
		{AppMulti, "/v1/integrations", "X-Tenant-Context: not-a-jwt\r\n", MultiURI},
	} {
		for range n {
			conn, err := tls.Dial("tcp", e.Addr(), e.TLSConfig(c.who))
			must(t, err)
			_, err = conn.Write([]byte("GET " + c.path + " HTTP/1.1\r\nHost: vaultd\r\n" + c.hdr + "\r\n"))
			must(t, err)
			must(t, conn.Close())
		}
		denied := func(ev map[string]any) bool { return ev["action"] == "auth.denied" && ev["actor"] == c.actor }
		got := 0
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if got = auditCount(t, e, denied); got == n {
				break
			}
		}
		if got != n {
			t.Fatalf("%s: %d auth.denied events for %d refused requests whose callers hung up", c.who, got, n)
		}
	}
}
