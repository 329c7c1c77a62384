package server

import (
	"testing"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		method, path      string
		label, allow      string
		pattern, id, rest string
	}{
		{"GET", "/v1/tenants", "tenants", "", "/v1/tenants", "", ""},
		{"DELETE", "/v1/tenants", "tenants", "GET, POST", "", "", ""},
		{"get", "/v1/tenants", "tenants", "GET, POST", "", "", ""},
		{"GET", "/v1/tenants/%61cme", "tenant", "", "/v1/tenants/{id}", "acme", ""},
		{"GET", "/v1/tenants/", "tenant", "", "/v1/tenants/{id}", "", ""},
		{"GET", "/v1/tenants/%zz", "tenant", "", "/v1/tenants/{id}", "", ""},
		{"POST", "/v1/tenants/acme", "tenant", "GET, DELETE", "", "", ""},
		{"DELETE", "/v1/tenants/acme", "tenant", "", "/v1/tenants/{id}", "acme", ""},
		{"POST", "/v1/tenants/acme/disable", "tenant.disable", "", "/v1/tenants/{id}/disable", "acme", ""},
		{"GET", "/v1/tenants/acme/enable", "tenant.enable", "POST", "", "", ""},
		{"DELETE", "/v1/admin/revocations", "revocations", "GET", "", "", ""},
		{"GET", "/v1/tenants/acme/rotate-dek", "tenant.rotate", "POST", "", "", ""},
		{"POST", "/v1/tenants/acme/rewrap/x", "", "", "", "", ""},
		{"POST", "/v1/tenants/acme/other", "", "", "", "", ""},
		{"PATCH", "/v1/integrations/crm", "integration", "GET, PUT, DELETE", "", "", ""},
		{"PUT", "/v1/integrations/crm", "integration", "", "/v1/integrations/{id}", "crm", ""},
		{"GET", "/v1/integrations/crm/proxy", "proxy", "", "/v1/integrations/{id}/proxy/{path...}", "crm", ""},
		{"TRACE", "/v1/integrations/crm/proxy/", "proxy", "", "/v1/integrations/{id}/proxy/{path...}", "crm", ""},
		{"GET", "/v1/integrations/crm/proxy//host/a%2fb", "proxy", "", "/v1/integrations/{id}/proxy/{path...}", "crm", "/host/a%2fb"},
		{"GET", "/v1/integrations/crm/execute", "execute", "POST", "", "", ""},
		{"POST", "/v1/integrations/crm/execute/x", "", "", "", "", ""},
		{"GET", "/v1/audit/x", "", "", "", "", ""},
		{"GET", "/v1/admin", "", "", "", "", ""},
		{"POST", "/v1/admin/backup", "backup", "GET", "", "", ""},
		{"GET", "/v1/", "", "", "", "", ""},
		{"GET", "/v1//tenants", "", "", "", "", ""},
		{"GET", "/v2/tenants", "", "", "", "", ""},
		{"GET", "", "", "", "", "", ""},
	} {
		rt, q, label, allow := match(c.method, c.path)
		if label != c.label || allow != c.allow {
			t.Errorf("%s %s: label %q allow %q, want %q %q", c.method, c.path, label, allow, c.label, c.allow)
		}
		switch {
		case c.pattern == "" && rt != nil:
			t.Errorf("%s %s: matched %s", c.method, c.path, rt.pattern)
		case c.pattern != "" && (rt == nil || rt.pattern != c.pattern || q.id != c.id || q.rest != c.rest):
			t.Errorf("%s %s: got %+v %+v, want %s id %q rest %q", c.method, c.path, rt, q, c.pattern, c.id, c.rest)
		}
	}
}

// Every row is complete, and rows of one pattern share a label and
// differ in method.
func TestRouteTable(t *testing.T) {
	labels := map[string]string{}
	seen := map[string]bool{}
	for _, rt := range routes {
		if rt.action == "" || rt.resource == nil || rt.handle == nil || rt.label == "" {
			t.Errorf("%s %s: incomplete row", rt.method, rt.pattern)
		}
		if l, ok := labels[rt.pattern]; ok && l != rt.label {
			t.Errorf("%s: labels %q and %q", rt.pattern, l, rt.label)
		}
		labels[rt.pattern] = rt.label
		if seen[rt.method+" "+rt.pattern] {
			t.Errorf("%s %s listed twice", rt.method, rt.pattern)
		}
		seen[rt.method+" "+rt.pattern] = true
	}
}
