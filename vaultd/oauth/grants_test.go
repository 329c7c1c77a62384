package oauth_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

const callbackURI = "https://vaultd.test/oauth/callback"

// connect runs the front channel against p: an authorization request with
// PKCE and state, the user's decision (approve), and the callback parsed
// and checked as vaultd does. It returns the callback and the verifier.
func connect(t *testing.T, p *oauthtest.Provider, clientID string, approve bool) (oauth.Callback, secret.String) {
	t.Helper()
	verifier, challenge, err := oauth.NewPKCE()
	if err != nil {
		t.Fatal(err)
	}
	state, err := oauth.NewState()
	if err != nil {
		t.Fatal(err)
	}
	authURL, err := oauth.AuthorizeURL(oauth.AuthorizeRequest{
		AuthorizationURL: p.AuthorizationURL(), ClientID: clientID, RedirectURI: callbackURI,
		Scopes: []string{"contacts.read", "contacts.write"}, State: state, CodeChallenge: challenge,
	})
	if err != nil {
		t.Fatal(err)
	}
	target, err := p.Authorize(authURL, approve)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := oauth.ParseCallback(u.RawQuery)
	if err != nil {
		t.Fatal(err)
	}
	if !cb.State.Equal(state) {
		t.Fatal("state not returned")
	}
	if err := oauth.CheckIssuer(cb, p.Issuer(), true); err != nil {
		t.Fatal(err)
	}
	return cb, verifier
}

func TestExchangeBothAuthStyles(t *testing.T) {
	for _, style := range []string{oauth.AuthStyleBasic, oauth.AuthStyleBody} {
		for _, useTLS := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/tls=%v", style, useTLS), func(t *testing.T) {
				p := oauthtest.New(t, oauthtest.Config{AuthStyle: style, TLS: useTLS, RedirectURIs: []string{callbackURI}, RequirePKCE: true})
				cb, verifier := connect(t, p, p.ClientID(), true)
				tok, err := oauth.Exchange(t.Context(), p.Endpoint(), cb.Code, callbackURI, verifier)
				if err != nil {
					t.Fatalf("Exchange: %v", err)
				}
				if p.LastAuthStyle() != style || p.CodeExchangeCount() != 1 {
					t.Fatalf("auth style %q, exchanges %d", p.LastAuthStyle(), p.CodeExchangeCount())
				}
				if !p.AccessTokenValid(tok.AccessToken) || !p.RefreshTokenValid(tok.RefreshToken) {
					t.Fatal("exchanged tokens not accepted by the provider")
				}
				if tok.ExpiresIn != oauthtest.DefaultExpiresIn || !slices.Equal(tok.Scope, []string{"contacts.read", "contacts.write"}) {
					t.Fatalf("expires_in %d scope %v", tok.ExpiresIn, tok.Scope)
				}
				// The refresh token it bought works.
				if _, err := oauth.Refresh(t.Context(), p.Endpoint(), tok.RefreshToken, nil); err != nil {
					t.Fatalf("Refresh: %v", err)
				}
			})
		}
	}
}

// TestExchangeErrors: every way a code can be refused is an *Error with
// invalid_grant (or invalid_client), and neither the code nor the verifier
// reaches any error text, even from a provider that echoes them.
func TestExchangeErrors(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{RedirectURIs: []string{callbackURI}})
	p.AddClient("other-app", "other-secret")
	p.SetEchoTokens(true)

	t.Run("replayed", func(t *testing.T) {
		cb, verifier := connect(t, p, p.ClientID(), true)
		tok, err := oauth.Exchange(t.Context(), p.Endpoint(), cb.Code, callbackURI, verifier)
		if err != nil {
			t.Fatal(err)
		}
		_, err = oauth.Exchange(t.Context(), p.Endpoint(), cb.Code, callbackURI, verifier)
		if !oauth.IsInvalidGrant(err) || oauth.IsTransient(err) {
			t.Fatalf("replay: %v", err)
		}
		assertNoSecrets(t, err, cb.Code, verifier, tok.AccessToken, tok.RefreshToken)
		if oauthErr(t, err).Op != "exchange" {
			t.Fatalf("op %q", oauthErr(t, err).Op)
		}
	})
	t.Run("wrong verifier", func(t *testing.T) {
		cb, verifier := connect(t, p, p.ClientID(), true)
		other, _, _ := oauth.NewPKCE()
		_, err := oauth.Exchange(t.Context(), p.Endpoint(), cb.Code, callbackURI, other)
		if !oauth.IsInvalidGrant(err) {
			t.Fatalf("wrong verifier: %v", err)
		}
		assertNoSecrets(t, err, cb.Code, verifier, other)
	})
	t.Run("no verifier", func(t *testing.T) {
		cb, verifier := connect(t, p, p.ClientID(), true)
		_, err := oauth.Exchange(t.Context(), p.Endpoint(), cb.Code, callbackURI, secret.String{})
		if !oauth.IsInvalidGrant(err) {
			t.Fatalf("no verifier: %v", err)
		}
		assertNoSecrets(t, err, cb.Code, verifier)
	})
	t.Run("wrong redirect_uri", func(t *testing.T) {
		cb, verifier := connect(t, p, p.ClientID(), true)
		_, err := oauth.Exchange(t.Context(), p.Endpoint(), cb.Code, callbackURI+"/other", verifier)
		if !oauth.IsInvalidGrant(err) {
			t.Fatalf("wrong redirect_uri: %v", err)
		}
		assertNoSecrets(t, err, cb.Code, verifier)
	})
	t.Run("wrong client secret", func(t *testing.T) {
		cb, verifier := connect(t, p, p.ClientID(), true)
		ep := p.Endpoint()
		ep.ClientSecret = secret.NewString("not-the-secret")
		_, err := oauth.Exchange(t.Context(), ep, cb.Code, callbackURI, verifier)
		if !oauth.IsInvalidClient(err) || oauth.IsInvalidGrant(err) || oauth.IsTransient(err) {
			t.Fatalf("wrong secret: %v", err)
		}
		assertNoSecrets(t, err, cb.Code, verifier, ep.ClientSecret)
	})
	t.Run("unknown client", func(t *testing.T) {
		cb, verifier := connect(t, p, p.ClientID(), true)
		ep := p.Endpoint()
		ep.ClientID = "nobody"
		_, err := oauth.Exchange(t.Context(), ep, cb.Code, callbackURI, verifier)
		if !oauth.IsInvalidClient(err) {
			t.Fatalf("unknown client: %v", err)
		}
		assertNoSecrets(t, err, cb.Code, verifier)
	})
	t.Run("code of another client", func(t *testing.T) {
		cb, verifier := connect(t, p, "other-app", true)
		_, err := oauth.Exchange(t.Context(), p.Endpoint(), cb.Code, callbackURI, verifier)
		if !oauth.IsInvalidGrant(err) {
			t.Fatalf("foreign code: %v", err)
		}
		assertNoSecrets(t, err, cb.Code, verifier)
	})
	t.Run("transient", func(t *testing.T) {
		cb, verifier := connect(t, p, p.ClientID(), true)
		p.SetNextTokenError("temporarily_unavailable", http.StatusServiceUnavailable)
		_, err := oauth.Exchange(t.Context(), p.Endpoint(), cb.Code, callbackURI, verifier)
		if !oauth.IsTransient(err) {
			t.Fatalf("503: %v", err)
		}
		assertNoSecrets(t, err, cb.Code, verifier)
	})
	t.Run("refused before sending", func(t *testing.T) {
		before := p.CodeExchangeCount()
		_, err := oauth.Exchange(t.Context(), p.Endpoint(), secret.String{}, callbackURI, secret.String{})
		if !errors.Is(err, oauth.ErrEmptyToken) {
			t.Fatalf("empty code: %v", err)
		}
		_, err = oauth.Exchange(t.Context(), p.Endpoint(), secret.NewString("c"), "", secret.String{})
		if !errors.Is(err, oauth.ErrInvalidEndpoint) {
			t.Fatalf("empty redirect_uri: %v", err)
		}
		if p.CodeExchangeCount() != before {
			t.Fatalf("CodeExchangeCount = %d: a refused call reached the provider", p.CodeExchangeCount())
		}
	})
	t.Run("denied", func(t *testing.T) {
		cb, _ := connect(t, p, p.ClientID(), false)
		if cb.Error != "access_denied" || !cb.Code.IsZero() {
			t.Fatalf("denied callback %+v", cb)
		}
	})
}

// TestExchangeRequestForm pins the §4.1.3 request as sent, for both auth
// styles, against a recording endpoint.
func TestExchangeRequestForm(t *testing.T) {
	var mu sync.Mutex
	var got url.Values
	var basic bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		_, _, hasBasic := r.BasicAuth()
		mu.Lock()
		got, basic = r.PostForm, hasBasic
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"at","token_type":"bearer","scope":"a,b"}`)
	}))
	t.Cleanup(srv.Close)
	for _, style := range []string{oauth.AuthStyleBasic, oauth.AuthStyleBody} {
		ep := oauth.Endpoint{TokenURL: srv.URL, ClientID: "cid", ClientSecret: secret.NewString("cs"), AuthStyle: style, ScopeSeparator: ","}
		tok, err := oauth.Exchange(t.Context(), ep, secret.NewString("the-code"), callbackURI, secret.NewString("the-verifier"))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(tok.Scope, []string{"a", "b"}) {
			t.Fatalf("scope %v", tok.Scope)
		}
		mu.Lock()
		want := url.Values{"grant_type": {"authorization_code"}, "code": {"the-code"}, "redirect_uri": {callbackURI}, "code_verifier": {"the-verifier"}}
		if style == oauth.AuthStyleBody {
			want.Set("client_id", "cid")
			want.Set("client_secret", "cs")
		}
		if got.Encode() != want.Encode() || basic != (style == oauth.AuthStyleBasic) {
			t.Errorf("%s: form %v basic %v", style, got, basic)
		}
		mu.Unlock()
		// No verifier: no code_verifier parameter at all.
		if _, err := oauth.Exchange(t.Context(), ep, secret.NewString("the-code"), callbackURI, secret.String{}); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		if got.Has("code_verifier") {
			t.Error("code_verifier sent without a verifier")
		}
		mu.Unlock()
	}
}

// TestErrorObjectWith200: Slack answers 200 with {"ok":false,"error":...};
// that is an *Error with the code, whatever the grant, and the secrets sent
// stay out of it even when the provider echoes them.
func TestErrorObjectWith200(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{RedirectURIs: []string{callbackURI}})
	cb, verifier := connect(t, p, p.ClientID(), true)
	body := fmt.Sprintf(`{"ok":false,"error":"invalid_code","warning":%q,"access_token":"xoxb-%s"}`, cb.Code.Reveal()+verifier.Reveal(), cb.Code.Reveal())
	p.SetNextRefreshResponse(http.StatusOK, "application/json", []byte(body))
	_, err := oauth.Exchange(t.Context(), p.Endpoint(), cb.Code, callbackURI, verifier)
	oe := oauthErr(t, err)
	if oe.Code != "invalid_code" || oe.HTTPStatus != http.StatusOK || oe.Op != "exchange" {
		t.Fatalf("got %+v", oe)
	}
	assertNoSecrets(t, err, cb.Code, verifier)

	p.SetNextRefreshResponse(http.StatusOK, "application/json", []byte(`{"ok":false,"error":"invalid_client_id"}`))
	_, err = oauth.ClientCredentials(t.Context(), p.Endpoint(), nil)
	if oe := oauthErr(t, err); oe.Code != "invalid_client_id" || oe.Op != "client_credentials" {
		t.Fatalf("got %+v", oe)
	}

	// An error code that is one of the secrets sent is dropped, not shown.
	cb, verifier = connect(t, p, p.ClientID(), true)
	p.SetNextRefreshResponse(http.StatusBadRequest, "application/json", []byte(`{"error":"`+verifier.Reveal()+`"}`))
	_, err = oauth.Exchange(t.Context(), p.Endpoint(), cb.Code, callbackURI, verifier)
	if oe := oauthErr(t, err); oe.Code != "" {
		t.Fatalf("code kept: %q", oe.Code)
	}
	assertNoSecrets(t, err, cb.Code, verifier)
}

func TestClientCredentials(t *testing.T) {
	for _, style := range []string{oauth.AuthStyleBasic, oauth.AuthStyleBody} {
		t.Run(style, func(t *testing.T) {
			p := oauthtest.New(t, oauthtest.Config{AuthStyle: style})
			tok, err := oauth.ClientCredentials(t.Context(), p.Endpoint(), []string{"reports.read"})
			if err != nil {
				t.Fatalf("ClientCredentials: %v", err)
			}
			if !p.AccessTokenValid(tok.AccessToken) || !tok.RefreshToken.IsZero() || p.LastAuthStyle() != style {
				t.Fatalf("valid %v, refresh %v, style %q", p.AccessTokenValid(tok.AccessToken), !tok.RefreshToken.IsZero(), p.LastAuthStyle())
			}
			if !slices.Equal(tok.Scope, []string{"reports.read"}) || p.ClientCredentialsCount() != 1 || p.TokenClient(tok.AccessToken) != p.ClientID() {
				t.Fatalf("scope %v count %d", tok.Scope, p.ClientCredentialsCount())
			}

			ep := p.Endpoint()
			ep.ClientSecret = secret.NewString("wrong-secret")
			_, err = oauth.ClientCredentials(t.Context(), ep, nil)
			if !oauth.IsInvalidClient(err) || oauth.IsTransient(err) {
				t.Fatalf("wrong secret: %v", err)
			}
			assertNoSecrets(t, err, ep.ClientSecret)

			// A refresh_token in the answer is dropped.
			p.SetNextRefreshResponse(http.StatusOK, "application/json", []byte(`{"access_token":"at-1","refresh_token":"rt-1","token_type":"Bearer"}`))
			tok, err = oauth.ClientCredentials(t.Context(), p.Endpoint(), nil)
			if err != nil || tok.AccessToken.Reveal() != "at-1" || !tok.RefreshToken.IsZero() {
				t.Fatalf("refresh token kept: %v %v", err, !tok.RefreshToken.IsZero())
			}
		})
	}
}

// TestScopeSeparatorAndFields: requested scopes are joined with the
// endpoint's separator in every grant, answers are split on it, and the
// named response fields are kept.
func TestScopeSeparatorAndFields(t *testing.T) {
	var mu sync.Mutex
	var scopes []string
	answer := `{"access_token":"at","refresh_token":"rt","scope":"chat:write, channels:read,chat:write",` +
		`"instance_url":"https://na1.example.test","id_token":"not-kept","bad":"x\u0001y","num":1}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		scopes = append(scopes, r.PostForm.Get("scope"))
		mu.Unlock()
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	ep := oauth.Endpoint{TokenURL: srv.URL, ClientID: "cid", ScopeSeparator: ",", ResponseFields: []string{"instance_url", "bad", "num", "absent"}}
	want := []string{"chat:write", "channels:read"}
	check := func(name string, tok oauth.Token, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(tok.Scope, want) {
			t.Errorf("%s: scope %q", name, tok.Scope)
		}
		if len(tok.Fields) != 1 || tok.Fields["instance_url"] != "https://na1.example.test" {
			t.Errorf("%s: fields %v", name, tok.Fields)
		}
	}
	tok, err := oauth.Refresh(t.Context(), ep, secret.NewString("rt"), want)
	check("refresh", tok, err)
	tok, err = oauth.ClientCredentials(t.Context(), ep, want)
	check("client credentials", tok, err)
	tok, err = oauth.Exchange(t.Context(), ep, secret.NewString("code"), callbackURI, secret.String{})
	check("exchange", tok, err)
	mu.Lock()
	if !slices.Equal(scopes, []string{"chat:write,channels:read", "chat:write,channels:read", ""}) {
		t.Errorf("scopes sent %q", scopes)
	}
	mu.Unlock()

	// The default separator splits on spaces only, as ParseTokenJSON does.
	tok, err = oauth.ParseTokenResponse([]byte(`{"access_token":"a","scope":"x y,z"}`), oauth.Endpoint{})
	if err != nil || !slices.Equal(tok.Scope, []string{"x", "y,z"}) || tok.Fields != nil {
		t.Fatalf("default separator: %v %q %v", err, tok.Scope, tok.Fields)
	}
	tok, err = oauth.ParseTokenResponse([]byte(`{"access_token":"a","scope":["x","y"],"f":"`+strings.Repeat("v", oauth.MaxResponseFieldBytes+1)+`"}`),
		oauth.Endpoint{ScopeSeparator: ",", ResponseFields: []string{"f"}})
	if err != nil || !slices.Equal(tok.Scope, []string{"x", "y"}) || tok.Fields != nil {
		t.Fatalf("array scope, oversized field: %v %q %v", err, tok.Scope, tok.Fields)
	}
	// ParseTokenJSON (store_token bodies) is unchanged: no fields.
	if tok, err := oauth.ParseTokenJSON([]byte(answer)); err != nil || tok.Fields != nil || !slices.Equal(tok.Scope, []string{"chat:write,", "channels:read,chat:write"}) {
		t.Fatalf("ParseTokenJSON: %v %q %v", err, tok.Scope, tok.Fields)
	}
}

func TestEndpointScopeAndFieldValidation(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	cases := map[string]oauth.Endpoint{}
	bad := p.Endpoint()
	bad.ScopeSeparator = ";"
	cases["separator"] = bad
	for _, name := range []string{"access_token", "refresh_token", "id_token", "scope", ""} {
		ep := p.Endpoint()
		ep.ResponseFields = []string{"instance_url", name}
		cases["field "+name] = ep
	}
	for name, ep := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := oauth.ClientCredentials(t.Context(), ep, nil); !errors.Is(err, oauth.ErrInvalidEndpoint) {
				t.Fatalf("ClientCredentials: %v", err)
			}
			if _, err := oauth.ParseTokenResponse([]byte(`{"access_token":"a"}`), ep); !errors.Is(err, oauth.ErrInvalidEndpoint) {
				t.Fatalf("ParseTokenResponse: %v", err)
			}
		})
	}
	ep := p.Endpoint()
	ep.ScopeSeparator = ","
	if _, err := oauth.ClientCredentials(t.Context(), ep, []string{"a,b"}); !errors.Is(err, oauth.ErrInvalidEndpoint) {
		t.Fatalf("scope holding the separator: %v", err)
	}
	if _, err := oauth.Refresh(t.Context(), p.Endpoint(), secret.NewString("rt"), []string{"a b"}); !errors.Is(err, oauth.ErrInvalidEndpoint) {
		t.Fatalf("scope holding a space: %v", err)
	}
	if n := p.RefreshCount(); n != 0 {
		t.Fatalf("a refused call reached the provider (%d)", n)
	}
}
