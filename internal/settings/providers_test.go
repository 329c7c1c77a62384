package settings

import (
	"reflect"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/vaultd/catalog"
	"github.com/vaultd/vaultd/vaultd/config"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// templateProvider follows settingsBase: [providers.x] at line 15,
// template 16, client_id 17, client_secret_file 18; extra lines from 19.
func templateProvider(template, extra string) string {
	return settingsBase + "[providers.x]\ntemplate = \"" + template + "\"\nclient_id = \"abc\"\nclient_secret_file = \"secrets/x\"\n" + extra
}

func TestProvidersWithoutTemplate(t *testing.T) {
	cfg := parseSettings(t, settingsBase+settingsProvider+"revocation_url = \"https://oauth.example.com/revoke\"\nscopes = [\"a\"]\n")
	ps, err := Providers(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := ps["example"]
	fp := cfg.Providers["example"]
	// Exactly today's values, with today's defaults.
	if p.Provider != fp || p.Template != "" || p.TokenURL != fp.TokenURL || p.APIBaseURL != fp.APIBaseURL ||
		p.RevocationURL != fp.RevocationURL || p.AuthorizationURL != "" || p.AuthStyle != oauth.AuthStyleBasic ||
		p.Grant != catalog.GrantAuthorizationCode || !p.PKCE || p.ScopeSeparator != " " || len(p.AuthorizeParams) != 0 ||
		!reflect.DeepEqual(p.Scopes, []string{"a"}) || p.Params != nil || p.APIHostFromToken != nil || p.ResponseFields != nil {
		t.Errorf("merged = %+v", p)
	}
	cfg = parseSettings(t, settingsBase+settingsProvider+"authorization_url = \"https://oauth.example.com/authorize\"\n"+
		"pkce = false\nscope_separator = \",\"\nauth_style = \"body\"\nauthorize_params = { prompt = \"consent\" }\n")
	if ps, err = Providers(cfg); err != nil {
		t.Fatal(err)
	}
	p = ps["example"]
	if p.AuthorizationURL != "https://oauth.example.com/authorize" || p.PKCE || p.ScopeSeparator != "," || p.AuthStyle != oauth.AuthStyleBody ||
		!reflect.DeepEqual(p.AuthorizeParams, map[string]string{"prompt": "consent"}) {
		t.Errorf("merged = %+v", p)
	}
}

func TestProvidersTemplateFills(t *testing.T) {
	ps, err := Providers(parseSettings(t, templateProvider("google", "")))
	if err != nil {
		t.Fatal(err)
	}
	g, _ := catalog.Lookup("google")
	p := ps["x"]
	if p.Template != "google" || p.AuthorizationURL != g.AuthorizationURL || p.TokenURL != g.TokenURL || p.RevocationURL != g.RevocationURL ||
		p.APIBaseURL != g.APIBaseURL || p.AuthStyle != g.AuthStyle || p.PKCE != g.PKCE || p.ScopeSeparator != g.ScopeSeparator ||
		!reflect.DeepEqual(p.AuthorizeParams, g.AuthorizeParams) || p.Grant != catalog.GrantAuthorizationCode {
		t.Errorf("google merged = %+v", p)
	}
	// Params and the API host rule come with the template.
	ps, err = Providers(parseSettings(t, templateProvider("microsoft", "")+"[providers.s]\ntemplate = \"salesforce\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	ms := ps["x"]
	if !strings.Contains(ms.TokenURL, "{tenant}") || len(ms.Params) != 1 || ms.Params[0].Name != "tenant" ||
		!reflect.DeepEqual(ms.Scopes, []string{"offline_access"}) {
		t.Errorf("microsoft merged = %+v", ms)
	}
	if err := (catalog.Template{Params: ms.Params}).ValidateParams(map[string]string{"tenant": "common"}); err != nil {
		t.Errorf("merged params do not validate: %v", err)
	}
	sf := ps["s"]
	if sf.APIHostFromToken == nil || sf.APIHostFromToken.Field != "instance_url" || !reflect.DeepEqual(sf.ResponseFields, []string{"instance_url"}) {
		t.Errorf("salesforce merged = %+v", sf)
	}
	if base, err := catalog.APIBaseFromToken(*sf.APIHostFromToken, sf.APIBaseURL, "https://acme.my.salesforce.com"); err != nil ||
		base != "https://acme.my.salesforce.com/services/data" {
		t.Errorf("api base %q, %v", base, err)
	}
}

func TestProvidersFileWins(t *testing.T) {
	extra := `token_url = "https://login.example.com/token"
api_base_url = "https://acme.my.salesforce.com/services/data/v60.0"
auth_style = "basic"
pkce = false
scope_separator = ","
scopes = ["api"]
authorize_params = { prompt = "login", display = "popup" }
`
	ps, err := Providers(parseSettings(t, templateProvider("salesforce", extra)))
	if err != nil {
		t.Fatal(err)
	}
	p := ps["x"]
	sf, _ := catalog.Lookup("salesforce")
	if p.TokenURL != "https://login.example.com/token" || p.APIBaseURL != "https://acme.my.salesforce.com/services/data/v60.0" ||
		p.AuthorizationURL != sf.AuthorizationURL || p.RevocationURL != sf.RevocationURL || p.AuthStyle != oauth.AuthStyleBasic ||
		p.PKCE || p.ScopeSeparator != "," || !reflect.DeepEqual(p.Scopes, []string{"api"}) ||
		!reflect.DeepEqual(p.AuthorizeParams, map[string]string{"prompt": "login", "display": "popup"}) {
		t.Errorf("merged = %+v", p)
	}
	// A fixed api_base_url from the file drops the token-host rule.
	if p.APIHostFromToken != nil {
		t.Errorf("api host rule kept with the file's api_base_url: %+v", p.APIHostFromToken)
	}
	// scopes = [] is "none"; prompt = "" drops the template's prompt.
	ps, err = Providers(parseSettings(t, templateProvider("google", "scopes = []\nauthorize_params = { prompt = \"\" }\n")))
	if err != nil {
		t.Fatal(err)
	}
	if p := ps["x"]; len(p.Scopes) != 0 || !reflect.DeepEqual(p.AuthorizeParams, map[string]string{"access_type": "offline"}) {
		t.Errorf("merged = %+v", p)
	}
	// A URL written in the file replaces the template's placeholders: the
	// param stays only while a merged URL uses it.
	ps, err = Providers(parseSettings(t, templateProvider("zendesk", `api_base_url = "https://acme.zendesk.com/api/v2"
token_url = "https://acme.zendesk.com/oauth/tokens"
authorization_url = "https://acme.zendesk.com/oauth/authorizations/new"
`)))
	if err != nil {
		t.Fatal(err)
	}
	if p := ps["x"]; p.Params != nil {
		t.Errorf("params kept with fixed URLs: %+v", p.Params)
	}
	// client_credentials drops the template's authorization endpoint.
	ps, err = Providers(parseSettings(t, templateProvider("microsoft", "grant = \"client_credentials\"\n")))
	if err != nil {
		t.Fatal(err)
	}
	if p := ps["x"]; p.AuthorizationURL != "" || p.Grant != catalog.GrantClientCredentials || len(p.Params) != 1 {
		t.Errorf("merged = %+v", p)
	}
}

func TestProvidersRefusals(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown template", templateProvider("nope", ""), "line 16: providers.x.template: no template \"nope\" in the built-in catalog (list them with `vaultctl providers catalog`)"},
		{"grant", templateProvider("google", "grant = \"password\"\n"), `line 19: providers.x.grant: not allowed (want "authorization_code" or "client_credentials")`},
		{"grant without template", settingsBase + settingsProvider + "grant = \"implicit\"\n", "line 20: providers.example.grant: not allowed"},
		{"auth_style", templateProvider("google", "auth_style = \"post\"\n"), `line 19: providers.x.auth_style: not allowed (want "basic" or "body")`},
		{"cc with authorization_url", settingsBase + settingsProvider + "grant = \"client_credentials\"\nauthorization_url = \"https://oauth.example.com/a\"\n",
			"line 21: providers.example.authorization_url: a client_credentials provider has no authorization endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parseSettings(t, tc.doc)
			_, err := Providers(cfg)
			checkConfigErr(t, err, tc.want)
			checkConfigErr(t, Check(cfg), tc.want)
		})
	}
	// Placeholders are the catalog's: a file that writes one is refused
	// before settings sees it.
	_, err := config.Parse([]byte(templateProvider("zendesk", "token_url = \"https://{subdomain}.zendesk.com/oauth/tokens\"\n")), "", config.ModeSyntax)
	checkConfigErr(t, err, "line 19: providers.x.token_url: must not contain { or }")
}
