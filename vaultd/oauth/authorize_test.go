package oauth_test

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

var base64url43 = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

func TestNewPKCE(t *testing.T) {
	seen := map[string]bool{}
	for range 8 {
		v, c, err := oauth.NewPKCE()
		if err != nil {
			t.Fatal(err)
		}
		if !base64url43.MatchString(v.Reveal()) || !base64url43.MatchString(c) {
			t.Fatalf("verifier len %d, challenge %q: not 43 base64url characters", v.Len(), c)
		}
		sum := sha256.Sum256([]byte(v.Reveal()))
		if c != base64.RawURLEncoding.EncodeToString(sum[:]) {
			t.Fatal("challenge is not BASE64URL(SHA256(verifier))")
		}
		if seen[v.Reveal()] {
			t.Fatal("verifier repeated")
		}
		seen[v.Reveal()] = true
	}
}

func TestNewState(t *testing.T) {
	a, err := oauth.NewState()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := oauth.NewState()
	if !base64url43.MatchString(a.Reveal()) || a.Equal(b) {
		t.Fatalf("state len %d, distinct %v", a.Len(), !a.Equal(b))
	}
	// A state NewState makes is one ParseCallback accepts.
	if _, err := oauth.ParseCallback("code=c&state=" + a.Reveal()); err != nil {
		t.Fatal(err)
	}
}

func goodAuthorizeRequest() oauth.AuthorizeRequest {
	return oauth.AuthorizeRequest{
		AuthorizationURL: "https://provider.example/oauth/authorize",
		ClientID:         "client 1",
		RedirectURI:      "https://vaultd.example/oauth/callback",
		Scopes:           []string{"contacts.read", "contacts.write"},
		State:            secret.NewString("st-abc"),
		CodeChallenge:    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
		Extra:            map[string]string{"prompt": "consent", "access_type": "offline"},
	}
}

func TestAuthorizeURL(t *testing.T) {
	got, err := oauth.AuthorizeURL(goodAuthorizeRequest())
	if err != nil {
		t.Fatal(err)
	}
	want := "https://provider.example/oauth/authorize?response_type=code&client_id=client+1" +
		"&redirect_uri=https%3A%2F%2Fvaultd.example%2Foauth%2Fcallback&scope=contacts.read+contacts.write" +
		"&state=st-abc&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256" +
		"&access_type=offline&prompt=consent"
	if got != want {
		t.Fatalf("AuthorizeURL\n got %s\nwant %s", got, want)
	}

	// The endpoint's own query is kept; "," joins Slack's scopes; no PKCE
	// parameters without a challenge; no scope without scopes.
	r := goodAuthorizeRequest()
	r.AuthorizationURL = "http://127.0.0.1:8080/authorize?tenant=x"
	r.ScopeSeparator = ","
	r.CodeChallenge = ""
	r.Extra = nil
	got, err = oauth.AuthorizeURL(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "http://127.0.0.1:8080/authorize?tenant=x&response_type=code&") ||
		!strings.Contains(got, "&scope=contacts.read%2Ccontacts.write&") || strings.Contains(got, "code_challenge") {
		t.Fatalf("AuthorizeURL = %s", got)
	}
	u, _ := url.Parse(got)
	if q := u.Query(); q.Get("state") != "st-abc" || q.Get("tenant") != "x" || q.Get("client_id") != "client 1" {
		t.Fatalf("query %v", q)
	}
	r.Scopes = nil
	r.AuthorizationURL = "http://[::1]:8080/authorize"
	if got, err = oauth.AuthorizeURL(r); err != nil || strings.Contains(got, "scope=") {
		t.Fatalf("no scopes: %s %v", got, err)
	}
	r.AuthorizationURL = "http://localhost/authorize"
	if _, err = oauth.AuthorizeURL(r); err != nil {
		t.Fatalf("localhost: %v", err)
	}
}

func TestAuthorizeURLRefusals(t *testing.T) {
	cases := map[string]func(*oauth.AuthorizeRequest){
		"relative URL":            func(r *oauth.AuthorizeRequest) { r.AuthorizationURL = "/authorize" },
		"no host":                 func(r *oauth.AuthorizeRequest) { r.AuthorizationURL = "https:///authorize" },
		"opaque":                  func(r *oauth.AuthorizeRequest) { r.AuthorizationURL = "https:provider.example" },
		"http remote":             func(r *oauth.AuthorizeRequest) { r.AuthorizationURL = "http://provider.example/authorize" },
		"http 127.0.0.2":          func(r *oauth.AuthorizeRequest) { r.AuthorizationURL = "http://127.0.0.2/authorize" },
		"other scheme":            func(r *oauth.AuthorizeRequest) { r.AuthorizationURL = "javascript://provider.example/" },
		"fragment":                func(r *oauth.AuthorizeRequest) { r.AuthorizationURL += "#frag" },
		"empty fragment":          func(r *oauth.AuthorizeRequest) { r.AuthorizationURL += "#" },
		"user info":               func(r *oauth.AuthorizeRequest) { r.AuthorizationURL = "https://u:p@provider.example/a" },
		"query has state":         func(r *oauth.AuthorizeRequest) { r.AuthorizationURL += "?state=mine" },
		"query has redirect_uri":  func(r *oauth.AuthorizeRequest) { r.AuthorizationURL += "?redirect_uri=https://evil" },
		"malformed query":         func(r *oauth.AuthorizeRequest) { r.AuthorizationURL += "?a=%zz" },
		"no client":               func(r *oauth.AuthorizeRequest) { r.ClientID = "" },
		"no redirect":             func(r *oauth.AuthorizeRequest) { r.RedirectURI = "" },
		"no state":                func(r *oauth.AuthorizeRequest) { r.State = secret.String{} },
		"scope with space":        func(r *oauth.AuthorizeRequest) { r.Scopes = []string{"a b"} },
		"scope with separator":    func(r *oauth.AuthorizeRequest) { r.ScopeSeparator = ","; r.Scopes = []string{"a,b"} },
		"empty scope":             func(r *oauth.AuthorizeRequest) { r.Scopes = []string{""} },
		"bad separator":           func(r *oauth.AuthorizeRequest) { r.ScopeSeparator = "+" },
		"extra overrides state":   func(r *oauth.AuthorizeRequest) { r.Extra = map[string]string{"state": "x"} },
		"extra overrides scope":   func(r *oauth.AuthorizeRequest) { r.Extra = map[string]string{"scope": "admin"} },
		"extra overrides method":  func(r *oauth.AuthorizeRequest) { r.Extra = map[string]string{"code_challenge_method": "plain"} },
		"extra repeats URL query": func(r *oauth.AuthorizeRequest) { r.AuthorizationURL += "?a=1"; r.Extra = map[string]string{"a": "2"} },
		"extra without name":      func(r *oauth.AuthorizeRequest) { r.Extra = map[string]string{"": "x"} },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			r := goodAuthorizeRequest()
			r.State = secret.NewString("state-value-never-printed")
			mod(&r)
			got, err := oauth.AuthorizeURL(r)
			if !errors.Is(err, oauth.ErrInvalidAuthorizeRequest) {
				t.Fatalf("AuthorizeURL = %q, %v", got, err)
			}
			if strings.Contains(err.Error(), "state-value-never-printed") {
				t.Fatalf("error leaks the state: %v", err)
			}
		})
	}
}

func TestParseCallback(t *testing.T) {
	cb, err := oauth.ParseCallback("code=abc+def%21&state=st-1_.~&iss=https%3A%2F%2Fprovider.example&unknown=1&unknown=2")
	if err != nil {
		t.Fatal(err)
	}
	if cb.Code.Reveal() != "abc def!" || cb.State.Reveal() != "st-1_.~" || cb.Iss != "https://provider.example" || cb.Error != "" {
		t.Fatalf("callback %+v", cb)
	}

	cb, err = oauth.ParseCallback("error=access_denied&error_description=The+user+said+no&error_uri=https%3A%2F%2Fp.example%2Fe&state=s")
	if err != nil {
		t.Fatal(err)
	}
	if cb.Error != "access_denied" || cb.ErrorDescription != "The user said no" || cb.ErrorURI != "https://p.example/e" || !cb.Code.IsZero() {
		t.Fatalf("error callback %+v", cb)
	}

	// Decoration outside its charset or bound is dropped, not fatal.
	cb, err = oauth.ParseCallback("error=server_error&error_description=%22quoted%22%0A&error_uri=has+space&state=s")
	if err != nil || cb.ErrorDescription != "" || cb.ErrorURI != "" || cb.Error != "server_error" {
		t.Fatalf("dropped decoration: %+v %v", cb, err)
	}
	cb, err = oauth.ParseCallback("error=e&error_description=" + strings.Repeat("d", 1025) + "&state=s")
	if err != nil || cb.ErrorDescription != "" {
		t.Fatalf("long description: %q %v", cb.ErrorDescription, err)
	}
}

const (
	secretCode  = "SECRETCODE-0123456789"
	secretState = "SECRETSTATE-0123456789"
)

func TestParseCallbackRefusals(t *testing.T) {
	c, s := "code="+secretCode, "state="+secretState
	cases := map[string]string{
		"empty":                 "",
		"no state":              c,
		"empty state":           c + "&state=",
		"state bad char":        c + "&state=" + secretState + "%2F",
		"state with null":       c + "&state=" + secretState + "%00",
		"state non-UTF-8":       c + "&state=" + secretState + "%FF",
		"state too long":        c + "&state=" + strings.Repeat("s", 513),
		"duplicate state":       c + "&" + s + "&" + s,
		"duplicate code":        c + "&" + c + "&" + s,
		"duplicate encoded":     c + "&" + s + "&%73tate=" + secretState,
		"duplicate iss":         c + "&" + s + "&iss=a&iss=a",
		"no code nor error":     s,
		"both code and error":   c + "&error=access_denied&" + s,
		"empty code":            "code=&" + s,
		"code with null":        c + "%00&" + s,
		"code with newline":     c + "%0A&" + s,
		"code non-ASCII":        c + "%C3%A9&" + s,
		"code too long":         "code=" + strings.Repeat("c", 4097) + "&" + s,
		"error with quote":      "error=a%22b&" + s,
		"error too long":        "error=" + strings.Repeat("e", 257) + "&" + s,
		"empty error":           "error=&" + s,
		"iss with space":        c + "&" + s + "&iss=https://a+b",
		"empty iss":             c + "&" + s + "&iss=",
		"iss too long":          c + "&" + s + "&iss=" + strings.Repeat("i", 2049),
		"bad escape":            c + "&" + s + "&iss=%zz",
		"bad escape in name":    c + "&" + s + "&%zz=1",
		"query too long":        c + "&" + s + "&x=" + strings.Repeat("x", 8<<10),
		"duplicate error":       "error=a&error=a&" + s,
		"code and empty error":  c + "&error=&" + s,
		"duplicate description": "error=a&error_description=x&error_description=y&" + s,
	}
	for name, q := range cases {
		t.Run(name, func(t *testing.T) {
			cb, err := oauth.ParseCallback(q)
			if !errors.Is(err, oauth.ErrInvalidCallback) {
				t.Fatalf("ParseCallback = %+v, %v", cb, err)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Fatalf("error leaks a value: %v", err)
			}
		})
	}
}

func TestCheckIssuer(t *testing.T) {
	const iss = "https://provider.example"
	with := oauth.Callback{Iss: iss}
	without := oauth.Callback{}
	wrong := oauth.Callback{Iss: "https://attacker.example/" + secretState}
	ok := []struct {
		cb       oauth.Callback
		expected string
		required bool
	}{
		{with, iss, false}, {with, iss, true}, {without, iss, false},
		{with, "", false}, {without, "", false}, {wrong, "", false}, // nothing configured: iss is ignored
	}
	for i, c := range ok {
		if err := oauth.CheckIssuer(c.cb, c.expected, c.required); err != nil {
			t.Errorf("case %d: %v", i, err)
		}
	}
	bad := []struct {
		cb       oauth.Callback
		expected string
		required bool
	}{
		{wrong, iss, false}, {wrong, iss, true}, {without, iss, true},
		{oauth.Callback{Iss: iss + "/"}, iss, false}, // exact comparison, RFC 9207 §2.4
		{with, "", true}, // required but nothing to compare with
	}
	for i, c := range bad {
		err := oauth.CheckIssuer(c.cb, c.expected, c.required)
		if !errors.Is(err, oauth.ErrIssuerMismatch) {
			t.Errorf("case %d: %v", i, err)
		} else if strings.Contains(err.Error(), "attacker") {
			t.Errorf("case %d: error quotes iss: %v", i, err)
		}
	}
}

// callbackErrorShape is every error text ParseCallback may produce.
var callbackErrorShape = regexp.MustCompile(`^oauth: invalid authorization callback: (` + strings.Join([]string{
	`query too long`,
	`malformed escape in a parameter name`,
	`malformed escape in (code|state|error|error_description|error_uri|iss)`,
	`duplicate parameter (code|state|error|error_description|error_uri|iss)`,
	`state missing`,
	`state is not 1-512 unreserved characters`,
	`both code and error present`,
	`neither code nor error present`,
	`code is not 1-4096 characters of %x20-7E`,
	`error is not 1-256 characters of the RFC 6749 error set`,
	`iss is not 1-2048 characters of %x21-7E`,
}, "|") + `)$`)

func FuzzParseCallback(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzParseCallback.
	f.Add("code=" + secretCode + "&state=" + secretState)
	f.Add("error=access_denied&state=" + secretState + "&iss=https%3A%2F%2Fp.example")
	f.Fuzz(func(t *testing.T, q string) {
		cb, err := oauth.ParseCallback(q)
		if err != nil {
			if !errors.Is(err, oauth.ErrInvalidCallback) {
				t.Fatalf("error %v does not wrap ErrInvalidCallback", err)
			}
			// The error never carries a value from the input: its text is
			// one of a closed set, and named code or state values stay out.
			if !callbackErrorShape.MatchString(err.Error()) {
				t.Fatalf("unexpected error text %q", err)
			}
			if vals, perr := url.ParseQuery(q); perr == nil {
				for _, v := range append(vals["code"], vals["state"]...) {
					if len(v) >= 8 && strings.Contains(err.Error(), v) {
						t.Fatalf("error %q contains an input value", err)
					}
				}
			}
			return
		}
		if cb.State.IsZero() || cb.State.Len() > 512 {
			t.Fatalf("state of length %d accepted", cb.State.Len())
		}
		if cb.Code.IsZero() == (cb.Error == "") {
			t.Fatalf("code set %v, error %q: want exactly one", !cb.Code.IsZero(), cb.Error)
		}
		if len(q) > oauth.MaxCallbackQueryBytes {
			t.Fatalf("query of %d bytes accepted", len(q))
		}
		for _, s := range []string{cb.Code.Reveal(), cb.State.Reveal(), cb.Error, cb.ErrorDescription, cb.ErrorURI, cb.Iss} {
			for i := 0; i < len(s); i++ {
				if s[i] < 0x20 || s[i] > 0x7e {
					t.Fatalf("byte %#x outside %%x20-7E accepted", s[i])
				}
			}
		}
		if strings.ContainsAny(cb.Error+cb.ErrorDescription+cb.ErrorURI+cb.Iss, `"\`) || strings.Contains(cb.ErrorURI+cb.Iss, " ") {
			t.Fatal("a character outside its RFC 6749 set was accepted")
		}
	})
}
