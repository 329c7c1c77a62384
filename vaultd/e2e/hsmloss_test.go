package e2e

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestHSMLossFailsClosed: the DEK cache lets a warm tenant work without the
// HSM, so losing the HSM must be noticed by vaultd itself. With the token
// wiped under a running vaultd (its files removed; SoftHSM then reports the
// KEK handle invalid), the health check evicts every cached DEK within one
// health_interval: proxied calls answer 503 integration_unavailable, new
// tenants are refused, /readyz says why, and the metrics show it.
func TestHSMLossFailsClosed(t *testing.T) {
	e := New(t, Options{HSMHealthInterval: "1s"})
	e.CreateTenant("acme")
	e.StoreToken(AppAcme, "crm")
	hc := e.HTTP(AppAcme)
	if r := obProxy(t, e, hc, "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("warm-up call: %d %s", r.Status, r.Body)
	}
	if st, body := e.OpsGet("/readyz"); st != http.StatusOK {
		t.Fatalf("readyz before: %d %s", st, body)
	}
	if v := obMetric(t, e, "vaultd_hsm_up"); v != 1 {
		t.Fatalf("vaultd_hsm_up before: %v", v)
	}

	must(t, os.RemoveAll(e.Token.TokenDir))

	// Bounded wait (at most 20 health intervals) for the first refusal.
	var last obResult
	refused := false
	for range 200 {
		last = obProxy(t, e, hc, "crm", http.MethodGet, "contacts/1", nil, nil)
		if last.Status != http.StatusOK {
			refused = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !refused {
		t.Fatal("proxied calls kept succeeding with the HSM gone")
	}
	if last.Status != http.StatusServiceUnavailable || last.Code() != "integration_unavailable" {
		t.Fatalf("call with the HSM gone: %d %s", last.Status, last.Body)
	}
	// And it stays refused: no path around the evicted cache.
	for range 5 {
		if r := obProxy(t, e, hc, "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusServiceUnavailable {
			t.Fatalf("later call with the HSM gone: %d %s", r.Status, r.Body)
		}
	}
	if _, err := e.Client(Operator).CreateTenant(t.Context(), "globex"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("tenant create with the HSM gone: %v", err)
	}
	st, body := e.OpsGet("/readyz")
	if st != http.StatusServiceUnavailable || !strings.Contains(body, `"reason":"hsm: unavailable"`) {
		t.Fatalf("readyz with the HSM gone: %d %s", st, body)
	}
	if v := obMetric(t, e, "vaultd_hsm_up"); v != 0 {
		t.Fatalf("vaultd_hsm_up with the HSM gone: %v", v)
	}
	if v := obMetric(t, e, "vaultd_dek_cache_hsm_evictions_total"); v < 1 {
		t.Fatalf("vaultd_dek_cache_hsm_evictions_total: %v", v)
	}
	logs := e.Logs()
	if !strings.Contains(logs, "hsm check failed: every cached data key evicted") {
		t.Fatal("no log line for the failed HSM check")
	}
	if strings.Contains(logs, e.Token.PIN) {
		t.Fatal("the PIN is in the logs")
	}
	// A graceful stop still works with the HSM gone.
	if err := e.Stop(); err != nil {
		t.Fatalf("stop with the HSM gone: %v", err)
	}
}
