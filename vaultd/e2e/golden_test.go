package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestGoldenPath walks the product's main job once: operator creates a
// tenant, the app stores a token, proxies a call (token injected, never
// returned), reads metadata, and the auditor sees a verifiable chain.
func TestGoldenPath(t *testing.T) {
	e := New(t, Options{})
	ctx := t.Context()
	e.CreateTenant("acme")
	tok := e.StoreToken(AppAcme, "crm")

	app := e.Client(AppAcme)
	resp, err := app.Proxy(ctx, "crm", http.MethodGet, "contacts/1?x=1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("proxy status %d: %s\nlogs:\n%s", resp.StatusCode, body, e.Logs())
	}
	if strings.Contains(string(body), tok.AccessToken.Reveal()) {
		t.Fatal("access token reached the caller")
	}
	reqs := e.Provider.APIRequests()
	if len(reqs) != 1 || reqs[0].Path != "/api/contacts/1" || reqs[0].RawQuery != "x=1" {
		t.Fatalf("upstream saw %+v", reqs)
	}

	md, err := app.GetIntegration(ctx, "crm")
	if err != nil {
		t.Fatal(err)
	}
	if md.TenantID != "acme" || md.Provider != ProviderName || md.Status != "active" {
		t.Fatalf("metadata %+v", md)
	}

	var sb strings.Builder
	if err := e.Client(Auditor).Audit(ctx, clientAuditAll(), &sb); err != nil {
		t.Fatal(err)
	}
	actions := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(sb.String()), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("bad audit line %q: %v", line, err)
		}
		actions[ev["action"].(string)] = true
	}
	for _, a := range []string{"tenant.create", "token.store", "proxy.request"} {
		if !actions[a] {
			t.Fatalf("audit lacks %s: %s", a, sb.String())
		}
	}
	if err := e.Stop(); err != nil {
		t.Fatalf("vaultd did not exit 0 on SIGTERM: %v\n%s", err, e.Logs())
	}
	out, err := e.Ctl("audit", "verify", e.AuditPath)
	if err != nil {
		t.Fatalf("audit verify of the mirror: %v\n%s", err, out)
	}
}
