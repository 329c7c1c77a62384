package e2e

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// The upstream's X-Request-Id replaced vaultd's on the proxy route. The
// answer carries one X-Request-Id, vaultd's, equal to the audit event's;
// the upstream's travels as X-Upstream-Request-Id.
func TestProxyKeepsVaultdRequestID(t *testing.T) {
	_, cfg := newHostile(t, 1)
	e := New(t, Options{ExtraConfig: cfg})
	e.CreateTenant("acme")
	hc := e.HTTP(AppAcme)
	r := obDo(t, hc, http.MethodPut, e.API+"/v1/integrations/h", nil,
		bytes.NewReader(storeBody("hostile", []byte(`{"access_token":"hostile-at","expires_in":86400}`))))
	if r.Status != http.StatusOK {
		t.Fatalf("store: %d %s", r.Status, r.Body)
	}
	r = obProxy(t, e, hc, "h", http.MethodGet, "x", nil, nil)
	ids := r.Header.Values("X-Request-Id")
	if r.Status != http.StatusOK || len(ids) != 1 || ids[0] == "upstream-request-id" {
		t.Fatalf("proxy answer %d, X-Request-Id %q", r.Status, ids)
	}
	if got := r.Header.Get("X-Upstream-Request-Id"); got != "upstream-request-id" {
		t.Fatalf("X-Upstream-Request-Id %q", got)
	}
	if n := auditCount(t, e, func(ev map[string]any) bool {
		return ev["action"] == "proxy.request" && ev["request_id"] == ids[0]
	}); n != 1 {
		t.Fatalf("audit events with the answer's request id: %d", n)
	}
}

// TRACE and CONNECT through the proxy answered 503 and logged at ERROR.
// They are refused with 405 method_not_allowed before any token is used.
func TestProxyRefusesTraceAndConnect(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	e.Provider.SetExpiresIn(longLived)
	e.StoreToken(AppAcme, "crm")
	before := len(e.Provider.APIRequests())
	for _, hc := range []*http.Client{e.HTTP(AppAcme), obHTTP1(e, AppAcme)} {
		for _, m := range []string{"TRACE", "trace", "CONNECT"} {
			r := obProxy(t, e, hc, "crm", m, "contacts", nil, nil)
			if m == "CONNECT" && r.Status == http.StatusNotFound && r.Code() == "not_found" {
				continue // HTTP/2 CONNECT carries no path: it names no route at all
			}
			if r.Status != http.StatusMethodNotAllowed || r.Code() != "method_not_allowed" {
				t.Fatalf("%s: %d %s", m, r.Status, r.Body)
			}
		}
	}
	if n := len(e.Provider.APIRequests()) - before; n != 0 {
		t.Fatalf("%d calls reached the upstream", n)
	}
	if strings.Contains(e.Logs(), `"level":"ERROR"`) {
		t.Fatalf("refused methods logged at ERROR:\n%s", e.Logs())
	}
}
