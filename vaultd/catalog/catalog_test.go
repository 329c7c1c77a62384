package catalog

import (
	"encoding/json"
	"errors"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestEmbeddedCatalog checks every template of catalog.json against the
// rules the rest of vaultd relies on, independently of parse's own checks.
func TestEmbeddedCatalog(t *testing.T) {
	if _, err := parse(embedded); err != nil {
		t.Fatal(err)
	}
	if Version() != CurrentVersion {
		t.Errorf("version %d, want %d", Version(), CurrentVersion)
	}
	all := All()
	if len(all) < 25 {
		t.Errorf("%d templates, want at least 25", len(all))
	}
	if !slices.IsSortedFunc(all, func(a, b Template) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("All is not sorted by name")
	}
	names := map[string]bool{}
	for _, tp := range all {
		if names[tp.Name] {
			t.Errorf("%s listed twice", tp.Name)
		}
		names[tp.Name] = true
		t.Run(tp.Name, func(t *testing.T) { checkTemplate(t, tp) })
	}
	for _, want := range []string{"google", "microsoft", "salesforce", "slack", "hubspot", "github", "gitlab", "atlassian",
		"zoom", "dropbox", "box", "notion", "zendesk", "intercom", "linear", "asana", "xero", "quickbooks", "docusign",
		"pipedrive", "shopify"} {
		if !names[want] {
			t.Errorf("required provider %s is missing", want)
		}
	}
	if extra := len(all) - 21; extra < 4 {
		t.Errorf("%d providers beyond the required ones, want at least 4", extra)
	}
}

func checkTemplate(t *testing.T, tp Template) {
	if !regexp.MustCompile(`^[a-z0-9_-]{1,64}$`).MatchString(tp.Name) || tp.DisplayName == "" || tp.Notes == "" {
		t.Errorf("name, display_name or notes: %q %q %q", tp.Name, tp.DisplayName, tp.Notes)
	}
	if len(tp.Docs) == 0 {
		t.Error("no docs")
	}
	for _, d := range tp.Docs {
		if u, err := url.Parse(d); err != nil || u.Scheme != "https" || u.Host == "" {
			t.Errorf("docs %q is not an https URL", d)
		}
	}
	declared := map[string]bool{}
	stand := map[string]string{}
	for _, p := range tp.Params {
		declared[p.Name] = true
		if !strings.HasPrefix(p.Pattern, "^") || !strings.HasSuffix(p.Pattern, "$") {
			t.Errorf("param %s: pattern %q is not anchored", p.Name, p.Pattern)
		}
		if _, err := regexp.Compile(p.Pattern); err != nil {
			t.Errorf("param %s: %v", p.Name, err)
		}
		if p.Description == "" {
			t.Errorf("param %s has no description", p.Name)
		}
		stand[p.Name] = "abc"
	}
	used := map[string]bool{}
	urls := map[string]string{"authorization_url": tp.AuthorizationURL, "token_url": tp.TokenURL,
		"revocation_url": tp.RevocationURL, "api_base_url": tp.APIBaseURL}
	for key, raw := range urls {
		if raw == "" {
			if key == "token_url" || key == "api_base_url" || key == "authorization_url" && tp.Grant == GrantAuthorizationCode {
				t.Errorf("%s missing", key)
			}
			continue
		}
		for _, n := range Placeholders(raw) {
			used[n] = true
		}
		if key == "api_base_url" && tp.APIHostFromToken != nil {
			// The host comes from the token response: check with a host
			// the rule allows.
			host := strings.TrimPrefix(tp.APIHostFromToken.AllowedHosts[0], "*.")
			var err error
			if raw, err = APIBaseFromToken(*tp.APIHostFromToken, raw, "https://acme."+host); err != nil {
				t.Errorf("api_base_url: %v", err)
				continue
			}
			delete(used, "api_host")
		}
		s, err := Expand(raw, stand)
		if err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" || u.Port() != "" {
			t.Errorf("%s %q is not a plain https URL", key, raw)
		}
		if key == "api_base_url" && u != nil && u.RawQuery != "" {
			t.Errorf("api_base_url %q has a query", raw)
		}
	}
	for n := range declared {
		if !used[n] {
			t.Errorf("param %s declared but unused", n)
		}
	}
	for n := range used {
		if !declared[n] {
			t.Errorf("placeholder {%s} not declared", n)
		}
	}
	if tp.AuthStyle != AuthStyleBasic && tp.AuthStyle != AuthStyleBody {
		t.Errorf("auth_style %q", tp.AuthStyle)
	}
	if tp.ScopeSeparator != " " && tp.ScopeSeparator != "," {
		t.Errorf("scope_separator %q", tp.ScopeSeparator)
	}
	if tp.Grant != GrantAuthorizationCode && tp.Grant != GrantClientCredentials {
		t.Errorf("grant %q", tp.Grant)
	}
	for k := range tp.AuthorizeParams {
		if slices.Contains(ProtocolParams, k) {
			t.Errorf("authorize_params sets protocol parameter %s", k)
		}
	}
}

// TestRequiredFacts pins the facts the task asked for by name.
func TestRequiredFacts(t *testing.T) {
	get := func(name string) Template {
		tp, ok := Lookup(name)
		if !ok {
			t.Fatalf("%s missing", name)
		}
		return tp
	}
	g := get("google")
	if g.AuthorizeParams["access_type"] != "offline" || g.AuthorizeParams["prompt"] != "consent" {
		t.Errorf("google authorize_params %v", g.AuthorizeParams)
	}
	ms := get("microsoft")
	if !strings.Contains(ms.AuthorizationURL, "/{tenant}/") || !strings.Contains(ms.TokenURL, "/{tenant}/") || !slices.Contains(ms.DefaultScopes, "offline_access") {
		t.Errorf("microsoft: %+v", ms)
	}
	if err := ms.ValidateParams(map[string]string{"tenant": "contoso.onmicrosoft.com"}); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"Contoso.com", "evil.com/x", "not-a-guid-", "00000000-0000-0000-0000-00000000000", "common/..", "localhost"} {
		if err := ms.ValidateParams(map[string]string{"tenant": bad}); err == nil {
			t.Errorf("tenant %q accepted", bad)
		}
	}
	for _, good := range []string{"organizations", "common", "consumers", "72f988bf-86f1-41af-91ab-2d7cd011db47"} {
		if err := ms.ValidateParams(map[string]string{"tenant": good}); err != nil {
			t.Errorf("tenant %q: %v", good, err)
		}
	}
	sf := get("salesforce")
	if sf.APIHostFromToken == nil || sf.APIHostFromToken.Field != "instance_url" ||
		!slices.Equal(sf.APIHostFromToken.AllowedHosts, []string{"*.my.salesforce.com", "*.salesforce.com"}) ||
		!slices.Contains(sf.ResponseFields, "instance_url") {
		t.Errorf("salesforce: %+v", sf.APIHostFromToken)
	}
	sl := get("slack")
	if sl.ScopeSeparator != "," || !strings.HasSuffix(sl.TokenURL, "/oauth.v2.access") {
		t.Errorf("slack: %+v", sl)
	}
	at := get("atlassian")
	if at.AuthorizeParams["audience"] != "api.atlassian.com" || at.AuthorizeParams["prompt"] != "consent" {
		t.Errorf("atlassian: %v", at.AuthorizeParams)
	}
	if get("notion").AuthorizeParams["owner"] != "user" || get("dropbox").AuthorizeParams["token_access_type"] != "offline" {
		t.Error("notion owner or dropbox token_access_type")
	}
	if !slices.Contains(get("xero").DefaultScopes, "offline_access") || len(get("zoom").DefaultScopes) != 0 {
		t.Error("xero or zoom default scopes")
	}
	if z := get("zendesk"); !strings.HasPrefix(z.APIBaseURL, "https://{subdomain}.zendesk.com/") {
		t.Errorf("zendesk %s", z.APIBaseURL)
	}
	sh := get("shopify")
	if !strings.HasPrefix(sh.AuthorizationURL, "https://{shop}.myshopify.com/") || len(sh.Params) != 1 || sh.Params[0].Name != "shop" {
		t.Errorf("shopify: %+v", sh)
	}
	if _, ok := Lookup("nope"); ok {
		t.Error("Lookup of an unknown name succeeded")
	}
}

// TestCopies: callers cannot change the catalog through what it hands out.
func TestCopies(t *testing.T) {
	a, _ := Lookup("google")
	a.AuthorizeParams["prompt"] = "none"
	a.Docs[0] = "x"
	sf, _ := Lookup("salesforce")
	sf.APIHostFromToken.AllowedHosts[0] = "*.evil.com"
	all := All()
	all[0].Name = "changed"
	b, _ := Lookup("google")
	sf2, _ := Lookup("salesforce")
	if b.AuthorizeParams["prompt"] != "consent" || b.Docs[0] == "x" || sf2.APIHostFromToken.AllowedHosts[0] != "*.my.salesforce.com" || All()[0].Name == "changed" {
		t.Error("a copy shares memory with the catalog")
	}
}

// TestParseRefusals: the validator refuses each rule's breach.
func TestParseRefusals(t *testing.T) {
	good := map[string]any{
		"name": "acme", "display_name": "Acme", "docs": []string{"https://docs.acme.example/oauth"},
		"authorization_url": "https://{sub}.acme.example/authorize", "token_url": "https://{sub}.acme.example/token",
		"api_base_url": "https://api.acme.example/v1", "auth_style": "basic", "pkce": true, "scope_separator": " ",
		"params": map[string]any{"sub": map[string]string{"pattern": "^[a-z]+$", "description": "subdomain"}},
		"notes":  "test",
	}
	doc := func(mod func(m map[string]any)) []byte {
		m := map[string]any{}
		for k, v := range good {
			m[k] = v
		}
		mod(m)
		b, err := json.Marshal(map[string]any{"version": 1, "providers": []any{m}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := parse(doc(func(map[string]any) {})); err != nil {
		t.Fatalf("good template refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(m map[string]any)
		want string
	}{
		{"name", func(m map[string]any) { m["name"] = "Acme" }, "name:"},
		{"no docs", func(m map[string]any) { m["docs"] = []string{} }, "docs:"},
		{"http docs", func(m map[string]any) { m["docs"] = []string{"http://docs.acme.example"} }, "docs[0]"},
		{"http token", func(m map[string]any) { m["token_url"] = "http://{sub}.acme.example/token" }, "token_url"},
		{"userinfo", func(m map[string]any) { m["token_url"] = "https://u:p@{sub}.acme.example/token" }, "token_url"},
		{"fragment", func(m map[string]any) { m["token_url"] = "https://{sub}.acme.example/token#x" }, "token_url"},
		{"port", func(m map[string]any) { m["api_base_url"] = "https://api.acme.example:8443/v1" }, "api_base_url"},
		{"api query", func(m map[string]any) { m["api_base_url"] = "https://api.acme.example/v1?x=1" }, "api_base_url"},
		{"undeclared", func(m map[string]any) { m["api_base_url"] = "https://{other}.acme.example/v1" }, "not a declared param"},
		{"unused", func(m map[string]any) {
			m["params"] = map[string]any{"sub": map[string]string{"pattern": "^[a-z]+$", "description": "d"},
				"x": map[string]string{"pattern": "^[a-z]+$", "description": "d"}}
		}, "params.x: declared but used in no URL"},
		{"unanchored", func(m map[string]any) {
			m["params"] = map[string]any{"sub": map[string]string{"pattern": "[a-z]+", "description": "d"}}
		}, "not anchored"},
		{"bad regexp", func(m map[string]any) {
			m["params"] = map[string]any{"sub": map[string]string{"pattern": "^[a-z+$", "description": "d"}}
		}, "params.sub.pattern"},
		{"auth_style", func(m map[string]any) { m["auth_style"] = "post" }, "auth_style"},
		{"separator", func(m map[string]any) { m["scope_separator"] = ";" }, "scope_separator"},
		{"grant", func(m map[string]any) { m["grant"] = "password" }, "grant"},
		{"no pkce", func(m map[string]any) { delete(m, "pkce") }, "pkce: required"},
		{"protocol param", func(m map[string]any) { m["authorize_params"] = map[string]string{"State": "x"} }, "set by vaultd itself"},
		{"no authorization_url", func(m map[string]any) { delete(m, "authorization_url") }, "authorization_url: required"},
		{"cc with authorization_url", func(m map[string]any) { m["grant"] = "client_credentials" }, "client_credentials template has none"},
		{"api_host without rule", func(m map[string]any) { m["api_base_url"] = "https://{api_host}/v1" }, "not a declared param"},
		{"rule without api_host", func(m map[string]any) {
			m["api_host_from_token"] = map[string]any{"field": "instance_url", "allowed_hosts": []string{"*.acme.example"}}
			m["response_fields"] = []string{"instance_url"}
		}, "must start with https://{api_host}"},
		{"rule field not kept", func(m map[string]any) {
			m["api_base_url"] = "https://{api_host}/v1"
			m["api_host_from_token"] = map[string]any{"field": "instance_url", "allowed_hosts": []string{"*.acme.example"}}
		}, "response_fields too"},
		{"rule bad pattern", func(m map[string]any) {
			m["api_base_url"] = "https://{api_host}/v1"
			m["api_host_from_token"] = map[string]any{"field": "instance_url", "allowed_hosts": []string{"*.com"}}
			m["response_fields"] = []string{"instance_url"}
		}, "allowed_hosts[0]"},
		{"secret response field", func(m map[string]any) { m["response_fields"] = []string{"refresh_token"} }, "response_fields[0]"},
		{"unknown member", func(m map[string]any) { m["colour"] = "red" }, "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(doc(tc.mod))
			if err == nil || !errors.Is(err, ErrCatalog) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrCatalog containing %q", err, tc.want)
			}
		})
	}
	for _, bad := range []string{`{"version":2,"providers":[]}`, `{"version":1,"providers":[]} {}`, `[]`} {
		if _, err := parse([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	twice, _ := json.Marshal(map[string]any{"version": 1, "providers": []any{good, good}})
	if _, err := parse(twice); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("duplicate name: %v", err)
	}
}

func TestValidateParams(t *testing.T) {
	z, _ := Lookup("zendesk")
	const secretish = "s3cr3t-VALUE"
	for _, tc := range []struct {
		params map[string]string
		want   string // "" = ok
	}{
		{map[string]string{"subdomain": "acme"}, ""},
		{nil, "subdomain is required"},
		{map[string]string{"subdomain": ""}, "subdomain is required"},
		{map[string]string{"subdomain": "Acme"}, "subdomain does not match"},
		{map[string]string{"subdomain": "acme.evil"}, "subdomain does not match"},
		{map[string]string{"subdomain": "acme", "tenant": secretish}, `unknown parameter "tenant"`},
		{map[string]string{"subdomain": secretish}, "subdomain does not match"},
	} {
		err := z.ValidateParams(tc.params)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.params, err)
		case tc.want != "" && (err == nil || !errors.Is(err, ErrParam) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: got %v, want %q", tc.params, err, tc.want)
		case err != nil && strings.Contains(err.Error(), secretish):
			t.Errorf("error echoes the value: %v", err)
		}
	}
	// A Param built outside the catalog (no compiled pattern) still works,
	// and an alternation cannot escape the anchors.
	tp := Template{Params: []Param{{Name: "x", Pattern: "^a$|^b$"}}}
	if err := tp.ValidateParams(map[string]string{"x": "b"}); err != nil {
		t.Error(err)
	}
	if err := tp.ValidateParams(map[string]string{"x": "ab"}); err == nil {
		t.Error("ab accepted")
	}
}

func TestExpand(t *testing.T) {
	p := map[string]string{"shop": "acme", "tenant": "contoso.com"}
	for _, tc := range []struct{ in, want, err string }{
		{"https://{shop}.myshopify.com/admin", "https://acme.myshopify.com/admin", ""},
		{"https://login.example/{tenant}/token", "https://login.example/contoso.com/token", ""},
		{"https://plain.example/x", "https://plain.example/x", ""},
		{"https://{nope}.example", "", "no value for {nope}"},
		{"https://{shop.example", "", "unbalanced {"},
		{"https://shop}.example", "", "unbalanced }"},
		{"https://{Shop}.example", "", "malformed placeholder"},
		{"https://{}.example", "", "malformed placeholder"},
	} {
		got, err := Expand(tc.in, p)
		if tc.err == "" && (err != nil || got != tc.want) || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Expand(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
	for _, v := range []string{"evil.com/", "a@b", "a#b", "a?b", "a:1", "a b", "a%2f", ""} {
		if _, err := Expand("https://{shop}.myshopify.com", map[string]string{"shop": v}); err == nil {
			t.Errorf("value %q expanded", v)
		}
	}
}

func TestParseGrant(t *testing.T) {
	for in, want := range map[string]string{"": GrantAuthorizationCode, "authorization_code": GrantAuthorizationCode, "client_credentials": GrantClientCredentials} {
		if got, err := ParseGrant(in); err != nil || got != want {
			t.Errorf("ParseGrant(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseGrant("password"); err == nil {
		t.Error("password grant accepted")
	}
}
