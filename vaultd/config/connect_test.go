package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// connectBase follows base: [connect] is on line 35, listen 36, public_url
// 37, return_to 38.
const connectBase = `[connect]
listen     = "0.0.0.0:8444"
public_url = "https://vault.example.com:8444/"
return_to  = ["https://app.example.com", "http://127.0.0.1:3000/cb"]
`

// connectDoc is base + connectBase with old->new replacements applied to
// connectBase (failing if old is absent).
func connectDoc(t *testing.T, pairs ...string) string {
	t.Helper()
	s := connectBase
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("test bug: %q not in connectBase", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return base + s
}

func TestConnectParsed(t *testing.T) {
	cfg, err := Parse([]byte(base), "/srv/vaultd", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Connect != nil {
		t.Fatalf("absent [connect] must stay nil: %+v", cfg.Connect)
	}
	cfg, err = Parse([]byte(connectDoc(t)), "/srv/vaultd", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Connect
	if c.Listen != "0.0.0.0:8444" || c.PublicBase.String() != "https://vault.example.com:8444" ||
		c.RedirectURI != "https://vault.example.com:8444/oauth/callback" || c.SessionTTL.Duration() != DefaultSessionTTL {
		t.Errorf("connect = %+v", c)
	}
	// No tls_cert/tls_key: [server]'s, resolved.
	if c.TLSCert != "/srv/vaultd/tls/server.crt" || c.TLSKey != "/srv/vaultd/tls/server.key" {
		t.Errorf("tls = %q %q", c.TLSCert, c.TLSKey)
	}
	var prefixes []string
	for _, u := range c.ReturnToPrefixes {
		prefixes = append(prefixes, u.String())
	}
	if !reflect.DeepEqual(prefixes, []string{"https://app.example.com/", "http://127.0.0.1:3000/cb"}) {
		t.Errorf("return_to prefixes = %v", prefixes)
	}

	cfg, err = Parse([]byte(connectDoc(t, `public_url = "https://vault.example.com:8444/"`, `public_url = "https://vault.example.com"`+
		"\ntls_cert = \"tls/connect.crt\"\ntls_key = \"/etc/connect.key\"\nsession_ttl = \"1h\"")), "/srv/vaultd", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	c = cfg.Connect
	if c.RedirectURI != "https://vault.example.com/oauth/callback" || c.TLSCert != "/srv/vaultd/tls/connect.crt" ||
		c.TLSKey != "/etc/connect.key" || c.SessionTTL.Duration() != time.Hour {
		t.Errorf("connect = %+v", c)
	}
}

func TestConnectRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"listen missing", connectDoc(t, `listen     = "0.0.0.0:8444"`, ""), "connect.listen: required"},
		{"listen bad", connectDoc(t, `"0.0.0.0:8444"`, `"8444"`), "line 36: connect.listen: not a host:port address"},
		{"listen is server's", connectDoc(t, `"0.0.0.0:8444"`, `"127.0.0.1:8443"`), "line 36: connect.listen: must differ from server.listen"},
		{"listen is ops'", strings.Replace(connectDoc(t, `"0.0.0.0:8444"`, `"127.0.0.1:9090"`), "[server]\n", "[server]\nops_listen = \"127.0.0.1:9090\"\n", 1),
			"line 37: connect.listen: must differ from server.ops_listen"},
		{"public_url missing", connectDoc(t, `public_url = "https://vault.example.com:8444/"`, ""), "connect.public_url: required"},
		{"public_url http", connectDoc(t, `"https://vault.example.com:8444/"`, `"http://vault.example.com:8444"`), "line 37: connect.public_url: must use https"},
		{"public_url http loopback", connectDoc(t, `"https://vault.example.com:8444/"`, `"http://127.0.0.1:8444"`), "connect.public_url: must use https"},
		{"public_url path", connectDoc(t, `"https://vault.example.com:8444/"`, `"https://vault.example.com/vaultd"`), "connect.public_url: must have no path other than /"},
		{"public_url query", connectDoc(t, `"https://vault.example.com:8444/"`, `"https://vault.example.com/?a=b"`), "connect.public_url: must not contain a query"},
		{"public_url fragment", connectDoc(t, `"https://vault.example.com:8444/"`, `"https://vault.example.com/#x"`), "connect.public_url: must not contain a fragment"},
		{"public_url userinfo", connectDoc(t, `"https://vault.example.com:8444/"`, `"https://u:p@vault.example.com/"`), "connect.public_url: must not contain user info"},
		{"public_url upper", connectDoc(t, `"https://vault.example.com:8444/"`, `"https://Vault.example.com/"`), "connect.public_url: write the host in lower case"},
		{"public_url port", connectDoc(t, `"https://vault.example.com:8444/"`, `"https://vault.example.com:99999/"`), "connect.public_url: port must be a number"},
		{"public_url empty port", connectDoc(t, `"https://vault.example.com:8444/"`, `"https://vault.example.com:/"`), "connect.public_url: port must be a number"},
		{"public_url relative", connectDoc(t, `"https://vault.example.com:8444/"`, `"vault.example.com"`), "connect.public_url: must be an absolute https URL"},
		{"session_ttl short", connectDoc(t, "[connect]\n", "[connect]\nsession_ttl = \"500ms\"\n"), "line 36: connect.session_ttl: must be between 1s and 24h"},
		{"session_ttl long", connectDoc(t, "[connect]\n", "[connect]\nsession_ttl = \"25h\"\n"), "connect.session_ttl: must be between 1s and 24h"},
		{"session_ttl int", connectDoc(t, "[connect]\n", "[connect]\nsession_ttl = 600\n"), `line 36: key "connect.session_ttl": expected a duration string`},
		{"return_to missing", connectDoc(t, `return_to  = ["https://app.example.com", "http://127.0.0.1:3000/cb"]`, ""), "connect.return_to: required"},
		{"return_to empty list", connectDoc(t, `["https://app.example.com", "http://127.0.0.1:3000/cb"]`, `[]`), "line 38: connect.return_to: required"},
		{"return_to http", connectDoc(t, `"http://127.0.0.1:3000/cb"`, `"http://app.example.com/"`), "line 38: connect.return_to[1]: must use https (http is allowed only for"},
		{"return_to query", connectDoc(t, `"https://app.example.com"`, `"https://app.example.com/?next=x"`), "connect.return_to[0]: must not contain a query"},
		{"return_to fragment", connectDoc(t, `"https://app.example.com"`, `"https://app.example.com/#x"`), "connect.return_to[0]: must not contain a fragment"},
		{"return_to userinfo", connectDoc(t, `"https://app.example.com"`, `"https://app.example.com@evil.example/"`), "connect.return_to[0]: must not contain user info"},
		{"return_to relative", connectDoc(t, `"https://app.example.com"`, `"/after"`), "connect.return_to[0]: must be an absolute https URL"},
		{"return_to javascript", connectDoc(t, `"https://app.example.com"`, `"javascript:alert(1)"`), "connect.return_to[0]: must be an absolute https URL"},
		{"return_to empty", connectDoc(t, `"https://app.example.com"`, `""`), "connect.return_to[0]: must not be empty"},
		{"return_to duplicate", connectDoc(t, `"http://127.0.0.1:3000/cb"`, `"https://app.example.com/"`), "connect.return_to[1]: same prefix as connect.return_to[0]"},
		{"tls_cert alone", connectDoc(t, "[connect]\n", "[connect]\ntls_cert = \"c.crt\"\n"), "line 35: connect: set both tls_cert and tls_key, or neither"},
		{"tls_key empty", connectDoc(t, "[connect]\n", "[connect]\ntls_cert = \"c.crt\"\ntls_key = \"\"\n"), "line 37: connect.tls_key: required"},
		{"unknown key", connectDoc(t, "[connect]\n", "[connect]\ncallback = \"/cb\"\n"), `line 36: unknown key "connect.callback"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), t.TempDir(), ModeSyntax)
			checkErrShape(t, err, "<input>")
			if err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got  %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestConnectDaemonFiles(t *testing.T) {
	dir := env(t)
	doc := connectDoc(t, "[connect]\n", "[connect]\ntls_cert = \"tls/connect.crt\"\ntls_key = \"tls/server.key\"\n")
	_, err := Load(writeConfig(t, dir, doc), ModeDaemon)
	checkErrShape(t, err, dir+"/vaultd.toml")
	if err == nil || !strings.Contains(err.Error(), "line 36: connect.tls_cert: unusable file") {
		t.Errorf("got %v", err)
	}
	write(t, dir, "tls/connect.crt", "cert")
	if _, err := Load(writeConfig(t, dir, doc), ModeDaemon); err != nil {
		t.Error(err)
	}
}

// provider is base with extra lines added to [providers.example] after
// client_id (line 33): the first extra line is 34.
func provider(t *testing.T, extra string, pairs ...string) string {
	t.Helper()
	return edit(t, append([]string{`client_id          = "abc"`, `client_id = "abc"` + "\n" + extra}, pairs...)...)
}

func TestProviderConnectKeys(t *testing.T) {
	doc := provider(t, `authorization_url = "https://oauth.example.com/authorize?audience=x"
grant = "client_credentials"
pkce = false
scope_separator = ","
authorize_params = { access_type = "offline", loginHint = "a b", empty = "" }`)
	cfg, err := Parse([]byte(doc), "", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Providers["example"]
	if p.AuthorizationEndpoint.RawQuery != "audience=x" || p.Grant != "client_credentials" || p.PKCE == nil || *p.PKCE ||
		p.ScopeSeparator != "," || !reflect.DeepEqual(p.AuthorizeParams, map[string]string{"access_type": "offline", "loginHint": "a b", "empty": ""}) {
		t.Errorf("provider = %+v", *p)
	}
	// Not written: "" and nil, for internal/settings to default.
	cfg, err = Parse([]byte(base), "", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	p = cfg.Providers["example"]
	if p.AuthorizationURL != "" || p.AuthorizationEndpoint != nil || p.Grant != "" || p.PKCE != nil || p.ScopeSeparator != "" ||
		p.AuthorizeParams != nil || p.Template != "" {
		t.Errorf("defaults = %+v", *p)
	}
	// authorize_params as a sub-table.
	cfg, err = Parse([]byte(base+"[providers.example.authorize_params]\nprompt = \"consent\"\n"), "", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Providers["example"].AuthorizeParams; !reflect.DeepEqual(got, map[string]string{"prompt": "consent"}) {
		t.Errorf("authorize_params = %v", got)
	}
}

func TestProviderTemplate(t *testing.T) {
	// With a template, every URL may be left out.
	doc := edit(t, `token_url          = "https://oauth.example.com/token"`, `template = "zendesk"`,
		`api_base_url       = "https://api.example.com/v2"`, "")
	cfg, err := Parse([]byte(doc), "", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Providers["example"]
	if p.Template != "zendesk" || p.TokenEndpoint != nil || p.APIBase != nil {
		t.Errorf("provider = %+v", *p)
	}
	// Without one, token_url stays required.
	_, err = Parse([]byte(edit(t, `token_url          = "https://oauth.example.com/token"`, "")), "", ModeSyntax)
	if err == nil || !strings.Contains(err.Error(), "providers.example.token_url: required") {
		t.Errorf("got %v", err)
	}
}

func TestProviderConnectRefusals(t *testing.T) {
	many := ""
	for i := range 33 {
		many += fmt.Sprintf("p%d = \"x\", ", i)
	}
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"authorization_url http", provider(t, `authorization_url = "http://oauth.example.com/authorize"`), "line 34: providers.example.authorization_url: must use https"},
		{"authorization_url userinfo", provider(t, `authorization_url = "https://u@oauth.example.com/authorize"`), "providers.example.authorization_url: must not contain user info"},
		{"authorization_url fragment", provider(t, `authorization_url = "https://oauth.example.com/authorize#x"`), "providers.example.authorization_url: must not contain a fragment"},
		{"authorization_url empty", provider(t, `authorization_url = ""`), "line 34: providers.example.authorization_url: must not be empty"},
		{"authorization_url placeholder", provider(t, `authorization_url = "https://{tenant}.example.com/authorize"`),
			"line 34: providers.example.authorization_url: must not contain { or }: placeholders belong to catalog templates"},
		{"token_url placeholder", edit(t, `"https://oauth.example.com/token"`, `"https://login.example.com/{tenant}/token"`),
			"line 31: providers.example.token_url: must not contain { or }"},
		{"api_base_url placeholder", edit(t, `"https://api.example.com/v2"`, `"https://{api_host}/v2"`), "line 32: providers.example.api_base_url: must not contain { or }"},
		{"template url empty", provider(t, `template = "google"`, `token_url          = "https://oauth.example.com/token"`, `token_url = ""`),
			"line 31: providers.example.token_url: must not be empty (omit the key to take the template's)"},
		{"template name", provider(t, `template = "Google"`), "line 34: providers.example.template: not a template name"},
		{"template empty", provider(t, `template = ""`), "line 34: providers.example.template: not a template name"},
		{"grant empty", provider(t, `grant = ""`), "line 34: providers.example.grant: must not be empty"},
		{"pkce string", provider(t, `pkce = "yes"`), `line 34: key "providers.example.pkce": expected a boolean (true or false), not string`},
		{"scope_separator", provider(t, `scope_separator = ";"`), `line 34: providers.example.scope_separator: must be " " or ","`},
		{"issuer http", provider(t, `issuer = "http://oauth.example.com"`), "line 34: providers.example.issuer: must be an https URL"},
		{"issuer empty", provider(t, `issuer = ""`), "line 34: providers.example.issuer: must be an https URL"},
		{"issuer query", provider(t, `issuer = "https://oauth.example.com/?x=1"`), "line 34: providers.example.issuer: must be an https URL without query"},
		{"authorize_params state", provider(t, `authorize_params = { state = "x" }`), "line 34: providers.example.authorize_params.state: state is set by vaultd itself"},
		{"authorize_params redirect_uri", provider(t, `authorize_params = { Redirect_URI = "x" }`), "providers.example.authorize_params.Redirect_URI: Redirect_URI is set by vaultd itself"},
		{"authorize_params code_challenge_method", provider(t, `authorize_params = { code_challenge_method = "plain" }`), "is set by vaultd itself"},
		{"authorize_params name space", provider(t, `authorize_params = { "a b" = "x" }`), `providers.example.authorize_params: parameter name "a b"`},
		{"authorize_params value control", provider(t, `authorize_params = { hint = "a\nb" }`), "providers.example.authorize_params.hint: value must be at most 256 printable ASCII characters"},
		{"authorize_params value long", provider(t, `authorize_params = { hint = "`+strings.Repeat("x", 257)+`" }`), "providers.example.authorize_params.hint: value must be"},
		{"authorize_params value type", provider(t, `authorize_params = { max_age = 5 }`), `line 34: `},
		{"authorize_params too many", provider(t, `authorize_params = { `+strings.TrimSuffix(many, ", ")+` }`), "providers.example.authorize_params: at most 32 parameters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), t.TempDir(), ModeSyntax)
			checkErrShape(t, err, "<input>")
			if err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got  %q\nwant it to contain %q", err, tc.want)
			}
			if err != nil && strings.Contains(tc.name, "value") && strings.Contains(err.Error(), "xxxx") {
				t.Errorf("error echoes the value: %v", err)
			}
		})
	}
}
