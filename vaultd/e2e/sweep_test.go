package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/vaultd/oauth"
)

type fleetAnswer struct {
	Integrations []struct {
		ID       string `json:"id"`
		TenantID string `json:"tenant_id"`
		Status   string `json:"status"`
		Health   struct {
			Score   int  `json:"score"`
			Flagged bool `json:"flagged"`
		} `json:"health"`
	} `json:"integrations"`
	Next string `json:"next"`
}

func fleetIDs(t *testing.T, r apiResp) (ids []string, next string) {
	t.Helper()
	wantStatus(t, r, http.StatusOK)
	var a fleetAnswer
	if err := json.Unmarshal(r.Body, &a); err != nil {
		t.Fatalf("fleet answer %s: %v", r.Body, err)
	}
	for _, in := range a.Integrations {
		ids = append(ids, in.TenantID+"/"+in.ID)
	}
	return ids, a.Next
}

// The fleet view and the health route on the real binary: filters,
// pagination, no token, tenant isolation, and the flagged gauge the sweep
// sets.
func TestFleetViewAndHealth(t *testing.T) {
	e := New(t, Options{ExtraConfig: `
[lifecycle]
score_threshold = 90
sweep_interval  = "1s"
`})
	e.CreateTenant("acme")
	e.CreateTenant("globex")
	crm := e.StoreToken(AppAcme, "crm")
	wide := e.StoreToken(AppAcme, "wide", "contacts.read", "admin") // a scope outside the inventory
	g1 := e.StoreToken(AppGlobex, "g1")
	op, app := e.HTTP(Operator), e.HTTP(AppAcme)
	base := e.API + "/v1/admin/integrations"

	r := do(t, op, http.MethodGet, base, nil)
	ids, next := fleetIDs(t, r)
	if strings.Join(ids, ",") != "acme/crm,acme/wide,globex/g1" || next != "" {
		t.Fatalf("fleet %v next %q", ids, next)
	}
	for _, tok := range []oauth.Token{crm, wide, g1} {
		noTokenIn(t, r.Body, tok)
	}
	m := jsonObject(t, r.Body)
	first := m["integrations"].([]any)[0].(map[string]any)
	wantKeys(t, first["health"].(map[string]any), "score", "flagged", "factors")

	for _, c := range []struct{ query, want string }{
		{"?flagged=true", "acme/wide"},
		{"?flagged=false&tenant_id=acme", "acme/crm"},
		{"?tenant_id=globex", "globex/g1"},
		{"?provider=" + ProviderName + "&status=active&tenant_id=globex", "globex/g1"},
		{"?status=degraded", ""},
		{"?tenant_id=nosuch", ""},
	} {
		ids, _ := fleetIDs(t, do(t, op, http.MethodGet, base+c.query, nil))
		if strings.Join(ids, ",") != c.want {
			t.Fatalf("%s: %v, want %s", c.query, ids, c.want)
		}
	}
	// Pagination: one at a time, following next.
	var all []string
	q := "?limit=1"
	for range 5 {
		ids, next := fleetIDs(t, do(t, op, http.MethodGet, base+q, nil))
		all = append(all, ids...)
		if next == "" {
			break
		}
		q = "?limit=1&after=" + next
	}
	if strings.Join(all, ",") != "acme/crm,acme/wide,globex/g1" {
		t.Fatalf("pages %v", all)
	}
	for _, bad := range []string{"?limit=0", "?limit=1001", "?flagged=maybe", "?status=nosuch", "?after=acme", "?nosuch=1"} {
		wantError(t, do(t, op, http.MethodGet, base+bad, nil), http.StatusBadRequest, "bad_request")
	}
	wantError(t, do(t, app, http.MethodGet, base, nil), http.StatusForbidden, "forbidden")

	// Health: the app's own integration; another tenant's answers exactly
	// like a missing one.
	r = do(t, app, http.MethodGet, e.API+"/v1/integrations/wide/health", nil)
	wantStatus(t, r, http.StatusOK)
	var h struct {
		Score   int  `json:"score"`
		Flagged bool `json:"flagged"`
		Factors []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"factors"`
	}
	must(t, json.Unmarshal(r.Body, &h))
	if h.Score != 85 || !h.Flagged || len(h.Factors) != 7 {
		t.Fatalf("health %s", r.Body)
	}
	for _, f := range h.Factors {
		if f.Name == "scopes" && (f.OK || !strings.Contains(f.Detail, "admin")) {
			t.Fatalf("scopes factor %+v", f)
		}
	}
	globex := e.HTTP(AppGlobex)
	sameAsMissing(t, "health",
		do(t, globex, http.MethodGet, e.API+"/v1/integrations/wide/health", nil),
		do(t, globex, http.MethodGet, e.API+"/v1/integrations/nosuch/health", nil))

	// The sweep (every second) counts the flagged integration.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, metrics := e.OpsGet("/metrics")
		if strings.Contains(metrics, "\nvaultd_integrations_flagged 1\n") &&
			strings.Contains(metrics, `vaultd_integrations{status="active"} 3`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flagged gauge not set:\n%s", grepLines(metrics, "vaultd_integrations"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := auditCount(t, e, func(ev map[string]any) bool {
		return ev["action"] == "integration.flagged" && ev["integration_id"] == "wide" && ev["detail"] == "score=85" && ev["actor"] == "vaultd"
	}); n != 1 {
		t.Fatalf("integration.flagged events: %d", n)
	}
}

// An idle integration is disconnected by the sweep end to end: revoked at
// the provider, deleted, with its integration.sweep event.
func TestSweepIdleDisconnectE2E(t *testing.T) {
	e := New(t, Options{ExtraConfig: `
[lifecycle]
idle_disconnect_after = "2s"
sweep_interval        = "1s"
`})
	e.CreateTenant("acme")
	e.StoreToken(AppAcme, "crm")
	app := e.HTTP(AppAcme)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := do(t, app, http.MethodGet, e.API+"/v1/integrations/crm", nil)
		if r.Status == http.StatusNotFound {
			break
		}
		wantStatus(t, r, http.StatusOK)
		if time.Now().After(deadline) {
			t.Fatal("idle integration not disconnected")
		}
		time.Sleep(200 * time.Millisecond)
	}
	sweep := auditWhere(t, e, func(ev map[string]any) bool {
		return ev["action"] == "integration.sweep" && ev["integration_id"] == "crm"
	})
	if len(sweep) != 1 || sweep[0]["actor"] != "vaultd" || !strings.HasPrefix(sweep[0]["detail"].(string), "idle_disconnect") {
		t.Fatalf("sweep events %v", sweep)
	}
	if n := auditCount(t, e, evIs("crm", "integration.delete", "success")); n != 1 {
		t.Fatalf("integration.delete events: %d", n)
	}
	if n := auditCount(t, e, evIs("crm", "token.revoke", "success")); n == 0 {
		t.Fatal("no revocation at the provider")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
