package e2e

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/client"
)

// The provider's refresh_margin is 60s in these tests: a token stored
// with expires_in 30 is due for refresh on its first use, and one stored
// with expires_in 1 is past its expiry a moment later.
const (
	dueSoon   = 30
	longLived = 3600
)

// refreshEnv stores a token that is due for refresh (expires_in seconds)
// as integration id of acme, and sets the provider to issue long-lived
// tokens from then on.
func refreshStore(t *testing.T, e *Env, id string, expiresIn int64, scopes ...string) {
	t.Helper()
	e.Provider.SetExpiresIn(expiresIn)
	e.StoreToken(AppAcme, id, scopes...)
	e.Provider.SetExpiresIn(longLived)
}

func refreshMD(t *testing.T, e *Env, id string) api.Integration {
	t.Helper()
	md, err := e.Client(AppAcme).GetIntegration(t.Context(), id)
	if err != nil {
		t.Fatalf("metadata %s: %v", id, err)
	}
	return md
}

// refreshUntil polls f (bounded) until it reports true; the refresh
// backoff after a transient failure is a few seconds.
func refreshUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	for i := 0; i < 150; i++ {
		if f() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not reached after 15s", what)
}

// TestRefresh covers refresh under the per-integration lock through the
// real API; the subtests share one vaultd and use their own integrations,
// running in order because the provider's knobs are global.
func TestRefresh(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	hc := e.HTTP(AppAcme)
	get := func(id string) obResult { return obProxy(t, e, hc, id, http.MethodGet, "contacts/1", nil, nil) }

	// 200 concurrent callers on a token due for refresh: exactly one call
	// to token_url, all succeed with the new token. stillDue makes the
	// provider issue tokens that are themselves inside the refresh margin
	// (refresh_margin larger than the token lifetime): the waiters must
	// still use the token refreshed while they queued, not refresh again.
	herd := func(t *testing.T, id string, stillDue bool) {
		e.Provider.SetExpiresIn(dueSoon)
		old := e.StoreToken(AppAcme, id)
		if !stillDue {
			e.Provider.SetExpiresIn(longLived)
		}
		defer e.Provider.SetExpiresIn(longLived)
		// Widen the window in which the others queue behind the lock.
		e.Provider.SetRefreshDelay(300 * time.Millisecond)
		defer e.Provider.SetRefreshDelay(0)
		refBefore, apiBefore := e.Provider.RefreshCount(), len(e.Provider.APIRequests())
		const n = 200
		statuses := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, e.API+"/v1/integrations/"+id+"/proxy/contacts/1", nil)
				resp, err := hc.Do(req)
				if err != nil {
					statuses[i] = -1
					return
				}
				resp.Body.Close()
				statuses[i] = resp.StatusCode
			}()
		}
		wg.Wait()
		for i, s := range statuses {
			if s != http.StatusOK {
				t.Fatalf("caller %d: status %d\n%s", i, s, e.Logs())
			}
		}
		if got := e.Provider.RefreshCount() - refBefore; got != 1 {
			t.Fatalf("%d calls to token_url for %d concurrent callers, want exactly 1", got, n)
		}
		// oauthtest records only requests carrying the current access
		// token, so all 200 went out with the new one.
		if got := len(e.Provider.APIRequests()) - apiBefore; got != n {
			t.Fatalf("upstream accepted %d of %d calls", got, n)
		}
		if e.Provider.AccessTokenValid(old.AccessToken) || e.Provider.RefreshTokenValid(old.RefreshToken) {
			t.Fatal("the old pair is still valid: no refresh (with rotation) happened")
		}
		md := refreshMD(t, e, id)
		if md.RefreshCount != 1 || md.Status != "active" || md.LastRefreshAt == nil {
			t.Fatalf("metadata %+v", md)
		}
	}
	t.Run("200_callers_one_refresh", func(t *testing.T) { herd(t, "herd", false) })
	t.Run("200_callers_one_refresh_margin_beyond_lifetime", func(t *testing.T) { herd(t, "herd-due", true) })

	t.Run("refresh_token_omitted_keeps_old", func(t *testing.T) {
		e.Provider.SetExpiresIn(dueSoon)
		old := e.StoreToken(AppAcme, "keep-rt")
		e.Provider.SetOmitRefreshToken(true) // the next answer also stays due
		refBefore := e.Provider.RefreshCount()
		if r := get("keep-rt"); r.Status != http.StatusOK {
			t.Fatalf("first refresh: %d %s", r.Status, r.Body)
		}
		e.Provider.SetOmitRefreshToken(false)
		e.Provider.SetExpiresIn(longLived)
		// The next refresh must present the original refresh token,
		// which the provider still honours.
		if !e.Provider.RefreshTokenValid(old.RefreshToken) {
			t.Fatal("provider dropped the refresh token it did not replace")
		}
		if r := get("keep-rt"); r.Status != http.StatusOK {
			t.Fatalf("second refresh: %d %s", r.Status, r.Body)
		}
		if got := e.Provider.RefreshCount() - refBefore; got != 2 {
			t.Fatalf("%d refreshes, want 2", got)
		}
		if md := refreshMD(t, e, "keep-rt"); md.RefreshCount != 2 || md.Status != "active" {
			t.Fatalf("metadata %+v", md)
		}
	})

	t.Run("expires_in_omitted_default_lifetime", func(t *testing.T) {
		refreshStore(t, e, "no-expiry", dueSoon)
		e.Provider.SetOmitExpiresIn(true)
		defer e.Provider.SetOmitExpiresIn(false)
		start := time.Now()
		if r := get("no-expiry"); r.Status != http.StatusOK {
			t.Fatalf("refresh: %d %s", r.Status, r.Body)
		}
		md := refreshMD(t, e, "no-expiry")
		// default_token_lifetime is 1h: the new expiry is far beyond the
		// margin, so the next call does not refresh.
		if md.ExpiresAt == nil || md.ExpiresAt.Before(start.Add(50*time.Minute)) || md.ExpiresAt.After(time.Now().Add(61*time.Minute)) {
			t.Fatalf("expires_at %v, want about 1h from now", md.ExpiresAt)
		}
		refBefore := e.Provider.RefreshCount()
		if r := get("no-expiry"); r.Status != http.StatusOK || e.Provider.RefreshCount() != refBefore {
			t.Fatalf("second call: %d, refreshed %d times", r.Status, e.Provider.RefreshCount()-refBefore)
		}
	})

	t.Run("invalid_grant_reauthorization_required", func(t *testing.T) {
		refreshStore(t, e, "dead-grant", dueSoon)
		e.Provider.SetNextRefreshError("invalid_grant", http.StatusBadRequest)
		r := get("dead-grant")
		if r.Status != http.StatusConflict || r.Code() != "reauthorization_required" {
			t.Fatalf("invalid_grant: %d %s", r.Status, r.Body)
		}
		md := refreshMD(t, e, "dead-grant")
		if md.Status != "reauthorization_required" || md.LastError == "" {
			t.Fatalf("metadata %+v", md)
		}
		// Stays that way without asking the provider again; execute too.
		refBefore := e.Provider.RefreshCount()
		if r := get("dead-grant"); r.Status != http.StatusConflict || r.Code() != "reauthorization_required" {
			t.Fatalf("second call: %d %s", r.Status, r.Body)
		}
		if r := obExecute(t, e, hc, "dead-grant", map[string]any{"method": "GET", "path": "contacts/1"}); r.Code() != "reauthorization_required" {
			t.Fatalf("execute: %d %s", r.Status, r.Body)
		}
		if e.Provider.RefreshCount() != refBefore {
			t.Fatal("a dead grant was refreshed again")
		}
		// Re-authorising (store_token again) brings it back.
		e.StoreToken(AppAcme, "dead-grant")
		if r := get("dead-grant"); r.Status != http.StatusOK {
			t.Fatalf("after re-authorisation: %d %s", r.Status, r.Body)
		}
	})

	t.Run("transient_failure_token_still_valid", func(t *testing.T) {
		refreshStore(t, e, "flaky-valid", dueSoon)
		e.Provider.SetNextRefreshError("temporarily_unavailable", http.StatusServiceUnavailable)
		refBefore := e.Provider.RefreshCount()
		// The token expires in 30s but is inside the margin: the refresh
		// fails, the old token keeps working.
		if r := get("flaky-valid"); r.Status != http.StatusOK {
			t.Fatalf("during provider outage: %d %s", r.Status, r.Body)
		}
		md := refreshMD(t, e, "flaky-valid")
		if md.Status != "degraded" || md.ConsecutiveFailures != 1 || md.LastError == "" {
			t.Fatalf("metadata %+v", md)
		}
		// Backing off: more calls use the old token without hammering.
		if r := get("flaky-valid"); r.Status != http.StatusOK {
			t.Fatalf("while backing off: %d", r.Status)
		}
		if got := e.Provider.RefreshCount() - refBefore; got != 1 {
			t.Fatalf("%d refresh attempts during backoff, want 1", got)
		}
		// The provider has healed (the error was one-shot): once the
		// backoff has passed, a call refreshes and the integration is
		// active again.
		refreshUntil(t, "recovery", func() bool {
			return get("flaky-valid").Status == http.StatusOK && refreshMD(t, e, "flaky-valid").Status == "active"
		})
		if md := refreshMD(t, e, "flaky-valid"); md.ConsecutiveFailures != 0 || md.RefreshCount != 1 || md.LastError != "" {
			t.Fatalf("after recovery %+v", md)
		}
	})

	t.Run("transient_failure_token_expired", func(t *testing.T) {
		refreshStore(t, e, "flaky-expired", 1)
		time.Sleep(1100 * time.Millisecond) // let the stored token expire
		e.Provider.SetNextRefreshError("temporarily_unavailable", http.StatusServiceUnavailable)
		r := get("flaky-expired")
		if r.Status != http.StatusServiceUnavailable || r.Code() != "integration_unavailable" {
			t.Fatalf("expired token, provider down: %d %s", r.Status, r.Body)
		}
		if md := refreshMD(t, e, "flaky-expired"); md.Status != "degraded" {
			t.Fatalf("metadata %+v", md)
		}
		refreshUntil(t, "recovery", func() bool { return get("flaky-expired").Status == http.StatusOK })
		if md := refreshMD(t, e, "flaky-expired"); md.Status != "active" || md.RefreshCount != 1 {
			t.Fatalf("after recovery %+v", md)
		}
	})

	t.Run("scope_drift", func(t *testing.T) {
		refreshStore(t, e, "drift", dueSoon, "contacts.read")
		e.Provider.SetGrantedScopes([]string{"contacts.read", "admin.everything"})
		defer e.Provider.SetGrantedScopes(nil)
		driftBefore := max(obMetric(t, e, `vaultd_scope_drift_total{provider="example"}`), 0)
		if r := get("drift"); r.Status != http.StatusOK {
			t.Fatalf("refresh: %d %s", r.Status, r.Body)
		}
		if got := obMetric(t, e, `vaultd_scope_drift_total{provider="example"}`); got != driftBefore+1 {
			t.Fatalf("vaultd_scope_drift_total = %v, want %v", got, driftBefore+1)
		}
		found := false
		for _, ev := range obAudit(t, e) {
			if ev["action"] == "scope.drift" && ev["integration_id"] == "drift" && ev["tenant_id"] == "acme" {
				found = strings.Contains(ev["detail"].(string), "admin.everything")
			}
		}
		if !found {
			t.Fatal("no scope.drift audit event naming the extra scope")
		}
	})

	t.Run("disconnect", func(t *testing.T) {
		app := e.Client(AppAcme)
		ctx := t.Context()
		tok := e.StoreToken(AppAcme, "bye")
		n0 := len(e.Provider.Revoked())
		revoked, err := app.DeleteIntegration(ctx, "bye")
		if err != nil || !revoked {
			t.Fatalf("disconnect: revoked=%v err=%v", revoked, err)
		}
		rv := e.Provider.Revoked()[n0:]
		if len(rv) != 2 || !rv[0].Equal(tok.RefreshToken) || !rv[1].Equal(tok.AccessToken) {
			t.Fatalf("revoked %d tokens, want refresh token then access token", len(rv))
		}
		if _, err := app.GetIntegration(ctx, "bye"); !client.IsCode(err, api.CodeNotFound) {
			t.Fatalf("GET after disconnect: %v", err)
		}
		if r := get("bye"); r.Status != http.StatusNotFound {
			t.Fatalf("proxy after disconnect: %d", r.Status)
		}

		// The provider's revocation endpoint failing does not keep the
		// record: it is deleted and the answer says so.
		e.StoreToken(AppAcme, "bye2")
		e.Provider.SetNextRevokeError("server_error", http.StatusServiceUnavailable)
		revoked, err = app.DeleteIntegration(ctx, "bye2")
		if err != nil || revoked {
			t.Fatalf("disconnect with failing revoke: revoked=%v err=%v", revoked, err)
		}
		if _, err := app.GetIntegration(ctx, "bye2"); !client.IsCode(err, api.CodeNotFound) {
			t.Fatalf("GET after failed-revoke disconnect: %v", err)
		}
		if _, err := app.DeleteIntegration(ctx, "bye2"); !client.IsCode(err, api.CodeNotFound) {
			t.Fatalf("second DELETE: %v", err)
		}
	})
}
