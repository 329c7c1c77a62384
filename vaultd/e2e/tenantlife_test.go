package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vaultd/vaultd/vaultd/api"
)

// The tenant lifecycle on the real binary: disable and enable through the
// API, and offboarding (revoke, delete, crypto-shred), including a backup
// taken before it and restored afterwards on the same SoftHSM token.

// tenantStatus reads GET /v1/tenants/{id} as the operator.
func tenantStatus(t *testing.T, e *Env, id string) string {
	t.Helper()
	r := do(t, e.HTTP(Operator), http.MethodGet, e.API+"/v1/tenants/"+id, nil)
	wantStatus(t, r, http.StatusOK)
	var tn api.Tenant
	must(t, json.Unmarshal(r.Body, &tn))
	return tn.Status
}

func TestTenantDisableEnable(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	e.CreateTenant("globex")
	e.StoreToken(AppAcme, "crm")
	e.StoreToken(AppGlobex, "crm")
	op, acme := e.HTTP(Operator), e.HTTP(AppAcme)

	// Only an operator disables; an app cannot, not even its own tenant.
	wantError(t, do(t, acme, http.MethodPost, e.API+"/v1/tenants/acme/disable", nil), http.StatusForbidden, "forbidden")
	wantError(t, do(t, op, http.MethodPost, e.API+"/v1/tenants/nosuch/disable", nil), http.StatusNotFound, "not_found")

	r := do(t, op, http.MethodPost, e.API+"/v1/tenants/acme/disable", nil)
	wantStatus(t, r, http.StatusOK)
	var tn api.Tenant
	must(t, json.Unmarshal(r.Body, &tn))
	if tn.ID != "acme" || tn.Status != "disabled" {
		t.Fatalf("disable answered %s", r.Body)
	}
	if s := tenantStatus(t, e, "acme"); s != "disabled" {
		t.Fatalf("status after disable: %q", s)
	}
	// Again: the same answer (idempotent).
	wantStatus(t, do(t, op, http.MethodPost, e.API+"/v1/tenants/acme/disable", nil), http.StatusOK)

	// Every app call of the tenant answers 403 tenant_disabled.
	store := []byte(`{"provider":"example","token":{"access_token":"x","token_type":"Bearer"}}`)
	for _, c := range []struct {
		method, path string
		body         []byte
	}{
		{http.MethodGet, "/v1/integrations", nil},
		{http.MethodGet, "/v1/integrations/crm", nil},
		{http.MethodPut, "/v1/integrations/other", store},
		{http.MethodDelete, "/v1/integrations/crm", nil},
		{http.MethodGet, "/v1/integrations/crm/proxy/contacts/1", nil},
		{http.MethodPost, "/v1/integrations/crm/execute", []byte(`{"method":"GET","path":"contacts/1"}`)},
		{http.MethodGet, "/v1/connect/sessions/cs1", nil},
	} {
		r := do(t, acme, c.method, e.API+c.path, c.body)
		if r.Status != http.StatusForbidden || !bytes.Contains(r.Body, []byte(`"tenant_disabled"`)) {
			t.Errorf("%s %s on a disabled tenant: %d %s", c.method, c.path, r.Status, r.Body)
		}
	}
	// Another tenant is untouched.
	if r := obProxy(t, e, e.HTTP(AppGlobex), "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("globex while acme is disabled: %d %s", r.Status, r.Body)
	}

	r = do(t, op, http.MethodPost, e.API+"/v1/tenants/acme/enable", nil)
	wantStatus(t, r, http.StatusOK)
	must(t, json.Unmarshal(r.Body, &tn))
	if tn.Status != "active" {
		t.Fatalf("enable answered %s", r.Body)
	}
	if r := obProxy(t, e, acme, "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("acme after enable: %d %s", r.Status, r.Body)
	}

	// One event each (the repeated disable changed nothing), by the operator.
	for _, action := range []string{"tenant.disable", "tenant.enable"} {
		n := auditCount(t, e, func(ev map[string]any) bool {
			return ev["action"] == action && ev["tenant_id"] == "acme" && ev["actor"] == "ops-admin" && ev["outcome"] == "success"
		})
		if n != 1 {
			t.Errorf("%s events: %d, want 1", action, n)
		}
	}
}

func TestTenantOffboardAndRestoredBackup(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	e.CreateTenant("globex")
	tokCRM := e.StoreToken(AppAcme, "crm")
	tokERP := e.StoreToken(AppAcme, "erp")
	e.StoreToken(AppGlobex, "crm")
	op := e.HTTP(Operator)

	// A backup taken before the offboarding.
	backup := filepath.Join(e.Dir, "before-offboarding.db")
	out, err := e.Ctl("backup", "-out", backup, "-server", e.API, "-cert", filepath.Join(e.PKIDir, Operator+".crt"),
		"-key", filepath.Join(e.PKIDir, Operator+".key"), "-ca", filepath.Join(e.PKIDir, "ca.crt"))
	if err != nil {
		t.Fatalf("vaultctl backup: %v\n%s", err, out)
	}

	wantError(t, do(t, e.HTTP(AppAcme), http.MethodDelete, e.API+"/v1/tenants/acme", nil), http.StatusForbidden, "forbidden")
	r := do(t, op, http.MethodDelete, e.API+"/v1/tenants/acme", nil)
	wantStatus(t, r, http.StatusOK)
	var top map[string]json.RawMessage
	must(t, json.Unmarshal(r.Body, &top))
	keys := make([]string, 0, len(top))
	for k := range top {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"integrations", "revocations_pending", "revoked_at_provider"}) {
		t.Fatalf("offboarding answer keys %v: %s", keys, r.Body)
	}
	var res api.OffboardResult
	must(t, json.Unmarshal(r.Body, &res))
	if res != (api.OffboardResult{Integrations: 2, RevokedAtProvider: 2, RevocationsPending: 0}) {
		t.Fatalf("offboarding answered %s", r.Body)
	}
	for _, tok := range []struct {
		name string
		ok   bool
	}{
		{"crm refresh", e.Provider.IsRevoked(tokCRM.RefreshToken)}, {"crm access", e.Provider.IsRevoked(tokCRM.AccessToken)},
		{"erp refresh", e.Provider.IsRevoked(tokERP.RefreshToken)}, {"erp access", e.Provider.IsRevoked(tokERP.AccessToken)},
	} {
		if !tok.ok {
			t.Errorf("%s token not revoked at the provider", tok.name)
		}
	}

	// Gone, for good: not found, and the id cannot be taken again.
	wantError(t, do(t, op, http.MethodGet, e.API+"/v1/tenants/acme", nil), http.StatusNotFound, "not_found")
	wantError(t, do(t, op, http.MethodDelete, e.API+"/v1/tenants/acme", nil), http.StatusNotFound, "not_found")
	wantError(t, do(t, op, http.MethodPost, e.API+"/v1/tenants", []byte(`{"id":"acme"}`)), http.StatusConflict, "conflict")
	wantError(t, do(t, e.HTTP(AppAcme), http.MethodGet, e.API+"/v1/integrations/crm", nil), http.StatusNotFound, "not_found")
	if r := obProxy(t, e, e.HTTP(AppGlobex), "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("globex after acme's offboarding: %d %s", r.Status, r.Body)
	}
	n := auditCount(t, e, func(ev map[string]any) bool {
		return ev["action"] == "tenant.offboard" && ev["tenant_id"] == "acme" && ev["outcome"] == "success" &&
			ev["detail"] == "integrations=2 revoked_at_provider=2 revocations_pending=0"
	})
	if n != 1 {
		t.Fatalf("tenant.offboard events: %d, want 1", n)
	}

	// The pre-offboarding backup restored on the same HSM token: acme's
	// records are back, but its tenant key is destroyed, so its tokens
	// cannot be opened (503, the store's data is unusable); globex's work.
	if err := e.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	b, err := os.ReadFile(backup)
	must(t, err)
	must(t, os.WriteFile(e.DBPath, b, 0o600))
	e.Start()
	for _, id := range []string{"crm", "erp"} {
		r := do(t, e.HTTP(AppAcme), http.MethodGet, e.API+"/v1/integrations/"+id+"/proxy/contacts/1", nil)
		wantError(t, r, http.StatusServiceUnavailable, "integration_unavailable")
	}
	if r := obProxy(t, e, e.HTTP(AppGlobex), "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("globex after the restore: %d %s", r.Status, r.Body)
	}
	// The operator removes the restored, unreadable records: offboarding
	// them again deletes them (nothing can be revoked: they are shredded).
	r = do(t, op, http.MethodDelete, e.API+"/v1/tenants/acme", nil)
	wantStatus(t, r, http.StatusOK)
	if m := jsonObject(t, r.Body); m["integrations"] != float64(2) || m["revoked_at_provider"] != float64(0) || m["revocations_pending"] != float64(0) {
		t.Fatalf("offboarding the restored tenant: %s", r.Body)
	}
	wantError(t, do(t, op, http.MethodGet, e.API+"/v1/tenants/acme", nil), http.StatusNotFound, "not_found")
}
