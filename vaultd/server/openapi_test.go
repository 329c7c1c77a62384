package server

import (
	"encoding/json"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/vaultd/api"
)

// openAPIMethods are the operations an OpenAPI path item may have.
var openAPIMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

type openAPIOp struct {
	Action    string                     `json:"x-vaultd-action"`
	Scope     string                     `json:"x-vaultd-scope"`
	Responses map[string]json.RawMessage `json:"responses"`
}

// docPath is how the document spells a route pattern ("{path...}" is
// "{path}": OpenAPI templates name a parameter, not how much it matches).
func docPath(pattern string) string { return strings.ReplaceAll(pattern, "{path...}", "{path}") }

// docs/openapi.json documents exactly the routes the server serves: every
// route of the table and of the ops listener, each with its policy
// action, scope and success status, and no operation without a route; its
// error codes are api's. A route added without documentation, or
// documentation left behind by a removed route, fails here.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	data, err := os.ReadFile("../../docs/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI    string                                `json:"openapi"`
		Info       struct{ Title, Version string }       `json:"info"`
		Servers    []struct{ URL string }                `json:"servers"`
		Security   []map[string][]string                 `json:"security"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			SecuritySchemes map[string]struct{ Type string } `json:"securitySchemes"`
			Parameters      map[string]struct{ Name, In string }
			Schemas         map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatalf("docs/openapi.json is not JSON: %v", err)
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("docs/openapi.json: %v", err)
	}
	for _, k := range []string{"openapi", "info", "servers", "security", "paths", "components"} {
		if top[k] == nil {
			t.Errorf("top-level %q missing", k)
		}
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") || doc.Info.Title == "" || doc.Info.Version == "" || len(doc.Servers) == 0 {
		t.Errorf("not an OpenAPI 3.1 document with info and servers: openapi %q info %+v", doc.OpenAPI, doc.Info)
	}
	mtls := ""
	for name, sc := range doc.Components.SecuritySchemes {
		if sc.Type == "mutualTLS" {
			mtls = name
		}
	}
	if mtls == "" || len(doc.Security) != 1 || doc.Security[0][mtls] == nil {
		t.Errorf("the API's security must be the mutualTLS scheme: %+v %+v", doc.Components.SecuritySchemes, doc.Security)
	}
	tenantContext := false
	for _, p := range doc.Components.Parameters {
		tenantContext = tenantContext || (p.Name == api.HeaderTenantContext && p.In == "header")
	}
	if !tenantContext {
		t.Errorf("no %s header parameter", api.HeaderTenantContext)
	}

	// Every route is documented, with its action, scope and status.
	want := map[string]bool{} // "path method"
	for _, rt := range routes {
		methods := []string{strings.ToLower(rt.method)}
		if rt.method == "" {
			methods = openAPIMethods
		}
		for _, m := range methods {
			want[docPath(rt.pattern)+" "+m] = true
			raw, ok := doc.Paths[docPath(rt.pattern)][m]
			if !ok {
				t.Errorf("route %s %s is not in docs/openapi.json", strings.ToUpper(m), rt.pattern)
				continue
			}
			var op openAPIOp
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Errorf("%s %s: %v", m, rt.pattern, err)
				continue
			}
			scope := map[scope]string{platform: "platform", tenantScoped: "tenant"}[rt.scope]
			if op.Action != string(rt.action) || op.Scope != scope {
				t.Errorf("%s %s: documented action %q scope %q, route has %q %q", m, rt.pattern, op.Action, op.Scope, rt.action, scope)
			}
			if rt.status != 0 && op.Responses[strconv.Itoa(rt.status)] == nil {
				t.Errorf("%s %s: success status %d not documented", m, rt.pattern, rt.status)
			}
		}
	}
	// ...and so is every ops route.
	s := New(Options{})
	for _, rt := range s.opsRoutes() {
		m := strings.ToLower(rt.method)
		want[rt.path+" "+m] = true
		if _, ok := doc.Paths[rt.path][m]; !ok {
			t.Errorf("ops route %s %s is not in docs/openapi.json", rt.method, rt.path)
		}
	}
	// Nothing is documented that no route serves.
	for p, item := range doc.Paths {
		for m := range item {
			if slices.Contains(openAPIMethods, m) && !want[p+" "+m] {
				t.Errorf("docs/openapi.json documents %s %s, which no route serves", strings.ToUpper(m), p)
			}
		}
	}

	// The error codes and their statuses are api's.
	var ec struct {
		Enum   []api.Code       `json:"enum"`
		Status map[api.Code]int `json:"x-vaultd-status"`
	}
	if err := json.Unmarshal(doc.Components.Schemas["ErrorCode"], &ec); err != nil {
		t.Fatalf("ErrorCode schema: %v", err)
	}
	if !slices.Equal(ec.Enum, api.Codes()) {
		t.Errorf("documented codes %v, api has %v", ec.Enum, api.Codes())
	}
	got := map[api.Code]int{}
	for _, c := range api.Codes() {
		got[c] = c.Status()
	}
	if !maps.Equal(ec.Status, got) {
		t.Errorf("documented statuses %v, api has %v", ec.Status, got)
	}
	for _, name := range []string{"Error", "Tenant", "TenantKeys", "TenantRewrap", "Integration", "ExecuteRequest", "ExecuteResponse", "AuditEvent", "ProviderList"} {
		if doc.Components.Schemas[name] == nil {
			t.Errorf("schema %s missing", name)
		}
	}
}
