package e2e

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Under kill -9, in either [audit] sync mode, every proxied call that got
// its answer has its proxy.request event once vaultd is back: the event is
// committed (always: fsynced; batch: at least in the kernel) before the
// answer leaves. In batch mode the events not yet committed at the kill
// come back from the WAL: sync_interval is long enough that some are.
func TestAuditSyncModesKill9(t *testing.T) {
	for _, mode := range []string{"always", "batch"} {
		t.Run(mode, func(t *testing.T) {
			interval := "50ms"
			if mode == "batch" {
				interval = "1s"
			}
			e := New(t, Options{AuditExtra: `sync = "` + mode + `"` + "\nsync_interval = \"" + interval + `"`})
			e.CreateTenant("acme")
			e.Provider.SetExpiresIn(longLived)
			e.StoreToken(AppAcme, "crm")
			hc := e.HTTP(AppAcme)

			var mu sync.Mutex
			answered := map[string]bool{}
			var n atomic.Int64
			var wg sync.WaitGroup
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 300; i++ {
						req, _ := http.NewRequest(http.MethodGet, e.API+"/v1/integrations/crm/proxy/contacts", nil)
						resp, err := hc.Do(req)
						if err != nil {
							return // vaultd is gone
						}
						resp.Body.Close()
						if resp.StatusCode == http.StatusOK {
							mu.Lock()
							answered[resp.Header.Get("X-Request-Id")] = true
							mu.Unlock()
							n.Add(1)
						}
					}
				}()
			}
			waitFor(t, func() bool { return n.Load() >= 40 })
			e.Kill9()
			wg.Wait()

			e.Start()
			replayed := strings.Contains(e.Logs(), "audit WAL: replayed token-use events")
			if replayed != (mode == "batch") {
				t.Errorf("%s: WAL replay logged: %v\n%s", mode, replayed, e.Logs())
			}
			_, metrics := e.OpsGet("/metrics")
			zero := strings.Contains(metrics, "\nvaultd_audit_wal_replayed_events 0\n")
			if !strings.Contains(metrics, "\nvaultd_audit_wal_replayed_events ") || zero != (mode == "always") {
				t.Errorf("%s: vaultd_audit_wal_replayed_events not as expected (zero: %v)", mode, zero)
			}
			recorded := map[string]bool{}
			for _, ev := range obAudit(t, e) {
				if ev["action"] == "proxy.request" && ev["integration_id"] == "crm" {
					recorded[ev["request_id"].(string)] = true
				}
			}
			mu.Lock()
			defer mu.Unlock()
			missing := 0
			for id := range answered {
				if !recorded[id] {
					missing++
				}
			}
			if missing > 0 {
				t.Fatalf("%s: %d of %d answered calls have no proxy.request event after kill -9", mode, missing, len(answered))
			}
			t.Logf("%s: %d answered calls, all audited", mode, len(answered))
		})
	}
}
