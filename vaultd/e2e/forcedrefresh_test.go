package e2e

import (
	"net/http"
	"testing"
)

// Ten upstream 401s made ten token_url calls. Now an integration gets at
// most one forced refresh per access token and per minute; the rest of the
// 401s are passed on as they came.
func TestForcedRefreshThrottledE2E(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	hc := e.HTTP(AppAcme)
	e.Provider.SetExpiresIn(longLived)
	e.StoreToken(AppAcme, "crm")
	before := e.Provider.RefreshCount()
	for i := 0; i < 10; i++ {
		r := obProxy(t, e, hc, "crm", http.MethodGet, "status/401", nil, nil)
		if r.Status != http.StatusUnauthorized || r.Header.Get("X-Vaultd-Error") != "" {
			t.Fatalf("401 #%d: %d %s", i, r.Status, r.Body)
		}
	}
	if got := e.Provider.RefreshCount() - before; got != 1 {
		t.Fatalf("token_url calls for ten 401s: %d, want 1", got)
	}
	if v := obMetric(t, e, "vaultd_forced_refresh_throttled_total"); v != 9 {
		t.Fatalf("throttled metric: %v, want 9", v)
	}
	// The token still works where the API accepts it.
	if r := obProxy(t, e, hc, "crm", http.MethodGet, "contacts", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("ordinary call: %d", r.Status)
	}
}
