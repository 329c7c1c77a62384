package catalog

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

// FuzzMatchHost: a match is always a valid lower-case DNS name that equals
// an exact pattern or ends in "." + a wildcard's suffix with at least one
// label before it.
func FuzzMatchHost(f *testing.F) {
	for _, h := range append(hostileHosts, "acme.my.salesforce.com", "a.salesforce.com") {
		f.Add("*.salesforce.com", h)
	}
	f.Add("salesforce.com", "salesforce.com")
	f.Add("*.my.salesforce.com", "my.salesforce.com")
	f.Fuzz(func(t *testing.T, pattern, host string) {
		if !MatchHost([]string{pattern}, host) {
			return
		}
		if !validHost(host) || host != strings.ToLower(host) || strings.ContainsAny(host, "#/?@:[]% ") {
			t.Fatalf("%q matched %q but is not a plain host", host, pattern)
		}
		if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
			if !strings.HasSuffix(host, "."+suffix) || len(host) <= len(suffix)+1 {
				t.Fatalf("%q matched %q without a label before the suffix", host, pattern)
			}
		} else if host != pattern {
			t.Fatalf("%q matched exact pattern %q", host, pattern)
		}
	})
}

// FuzzAPIBaseFromToken: an accepted value yields https://<allowed host> +
// the api_base_url's path, nothing else.
func FuzzAPIBaseFromToken(f *testing.F) {
	for _, v := range []string{
		"https://acme.my.salesforce.com", "https://evil.com#.salesforce.com", "https://salesforce.com.evil.com",
		"https://x.my.salesforce.com.evil", "https://u:p@acme.salesforce.com", "https://acme.salesforce.com@evil.com",
		"https://ACME.SALESFORCE.COM", "https://acme.salesforce.com.", "https://acme.salesforce.com:443",
		"https://acme.salesforce.com:8443", "https://xn--80ak6aa92e.salesforce.com", "https://аcme.salesforce.com",
		"https://acme.salesforce.com/%2e%2e", "https://acme.salesforce.com\\.evil.com",
	} {
		f.Add(v)
	}
	rule := HostRule{Field: "instance_url", AllowedHosts: sfHosts}
	f.Fuzz(func(t *testing.T, value string) {
		got, err := APIBaseFromToken(rule, "https://{api_host}/services/data", value)
		if err != nil {
			if !errors.Is(err, ErrAPIHost) {
				t.Fatalf("error %v is not ErrAPIHost", err)
			}
			if len(value) > 8 && strings.Contains(err.Error(), value) {
				t.Fatalf("error echoes the value: %v", err)
			}
			return
		}
		host, ok := strings.CutSuffix(strings.TrimPrefix(got, "https://"), "/services/data")
		if !ok || !strings.HasPrefix(got, "https://") || !MatchHost(sfHosts, host) {
			t.Fatalf("%q gave %q", value, got)
		}
		u, err := url.Parse(got)
		if err != nil || u.Host != host || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Path != "/services/data" {
			t.Fatalf("%q gave %q, which parses differently", value, got)
		}
	})
}

// FuzzExpand: an expansion leaves no brace, and the value it put in is
// only unreserved characters (so a template's URL keeps its structure).
func FuzzExpand(f *testing.F) {
	f.Add("https://{shop}.myshopify.com/admin", "acme")
	f.Add("https://{shop}.myshopify.com/admin", "evil.com/")
	f.Add("https://{shop}.myshopify.com/admin", "a@b")
	f.Add("https://{shop}}.x/{", "a")
	f.Add("https://login.example/{tenant}/token", "contoso.com")
	f.Fuzz(func(t *testing.T, s, v string) {
		got, err := Expand(s, map[string]string{"shop": v, "tenant": v})
		if err != nil {
			if !errors.Is(err, ErrPlaceholder) {
				t.Fatalf("error %v is not ErrPlaceholder", err)
			}
			return
		}
		if strings.ContainsAny(s, "{}") && strings.ContainsAny(got, "{}") && !strings.ContainsAny(v, "{}") {
			t.Fatalf("Expand(%q) = %q still has a brace", s, got)
		}
		if strings.ContainsAny(s, "{}") && strings.IndexFunc(v, notUnreserved) >= 0 {
			t.Fatalf("Expand put %q into %q", v, s)
		}
	})
}

// FuzzValidateParams: accepted params expand every URL of the template
// into an https URL on the provider's own domain.
func FuzzValidateParams(f *testing.F) {
	for _, v := range []string{"acme", "Acme", "acme.evil", "evil.com#", "a-b", "-a", strings.Repeat("a", 64), "contoso.onmicrosoft.com",
		"72f988bf-86f1-41af-91ab-2d7cd011db47", "common", "../x", "a\nb"} {
		f.Add("zendesk", v)
		f.Add("microsoft", v)
		f.Add("shopify", v)
	}
	f.Fuzz(func(t *testing.T, name, v string) {
		tp, ok := Lookup(name)
		if !ok || len(tp.Params) != 1 {
			return
		}
		params := map[string]string{tp.Params[0].Name: v}
		if err := tp.ValidateParams(params); err != nil {
			if !errors.Is(err, ErrParam) || len(v) > 6 && strings.Contains(err.Error(), v) {
				t.Fatalf("bad error %v", err)
			}
			return
		}
		for _, raw := range []string{tp.AuthorizationURL, tp.TokenURL, tp.APIBaseURL} {
			s, err := Expand(raw, params)
			if err != nil {
				t.Fatalf("validated %q does not expand %q: %v", v, raw, err)
			}
			u, err := url.Parse(s)
			if err != nil || u.Scheme != "https" || u.User != nil || u.Fragment != "" {
				t.Fatalf("%q gave %q", v, s)
			}
			fixed, _ := url.Parse(strings.ReplaceAll(raw, "{"+tp.Params[0].Name+"}", "x0"))
			if parent := fixed.Hostname()[strings.IndexByte(fixed.Hostname(), '.'):]; !strings.HasSuffix(u.Hostname(), parent) {
				t.Fatalf("%q moved %q off its domain: %q", v, raw, s)
			}
		}
	})
}

// FuzzParse: the catalog parser never panics, and what it accepts
// re-validates (every template's placeholders are declared).
func FuzzParse(f *testing.F) {
	f.Add(embedded)
	f.Add([]byte(`{"version":1,"providers":[]}`))
	f.Add([]byte(`{"version":1,"providers":[{"name":"a","display_name":"A","docs":["https://a.example"],"token_url":"https://{x}.a.example/t","api_base_url":"https://a.example","auth_style":"basic","pkce":true,"scope_separator":" ","grant":"client_credentials","params":{"x":{"pattern":"^[a-z]+$","description":"d"}},"notes":"n"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parse(b)
		if err != nil {
			if !errors.Is(err, ErrCatalog) {
				t.Fatalf("error %v is not ErrCatalog", err)
			}
			return
		}
		for _, tp := range c.templates {
			for _, raw := range []string{tp.AuthorizationURL, tp.TokenURL, tp.RevocationURL} {
				for _, n := range Placeholders(raw) {
					if !strings.Contains(tp.APIBaseURL+raw, "{"+n+"}") || !hasParam(tp, n) {
						t.Fatalf("%s: undeclared {%s}", tp.Name, n)
					}
				}
			}
		}
	})
}

func hasParam(tp Template, n string) bool {
	for _, p := range tp.Params {
		if p.Name == n {
			return true
		}
	}
	return false
}
