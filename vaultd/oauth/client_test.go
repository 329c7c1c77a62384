package oauth_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// assertNoSecrets fails if err, in any textual form, contains one of the
// given secrets (or the provider's client secret).
func assertNoSecrets(t *testing.T, err error, secrets ...secret.String) {
	t.Helper()
	if err == nil {
		return
	}
	forms := []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)}
	var oe *oauth.Error
	if errors.As(err, &oe) {
		forms = append(forms, oe.Code, oe.Description)
	}
	secrets = append(secrets, secret.NewString(oauthtest.DefaultClientSecret))
	for _, s := range secrets {
		if s.IsZero() {
			continue
		}
		for _, f := range forms {
			if strings.Contains(f, s.Reveal()) {
				t.Fatalf("error text leaks a secret (len %d): %q", s.Len(), strings.ReplaceAll(f, s.Reveal(), "<LEAKED>"))
			}
		}
	}
	// No issued token of any kind, even one we did not pass in.
	for _, f := range forms {
		if strings.Contains(f, oauthtest.AccessTokenPrefix) || strings.Contains(f, oauthtest.RefreshTokenPrefix) {
			t.Fatalf("error text contains a token: %q", f)
		}
	}
}

func oauthErr(t *testing.T, err error) *oauth.Error {
	t.Helper()
	var oe *oauth.Error
	if !errors.As(err, &oe) {
		t.Fatalf("err = %v (%T), want *oauth.Error", err, err)
	}
	return oe
}

func TestRefreshBothAuthStyles(t *testing.T) {
	for _, style := range []string{oauth.AuthStyleBasic, oauth.AuthStyleBody} {
		for _, useTLS := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/tls=%v", style, useTLS), func(t *testing.T) {
				p := oauthtest.New(t, oauthtest.Config{AuthStyle: style, TLS: useTLS})
				initial := p.IssueInitialToken([]string{"contacts.read", "contacts.write"})

				got, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil)
				if err != nil {
					t.Fatalf("Refresh: %v", err)
				}
				if p.LastAuthStyle() != style {
					t.Fatalf("provider saw auth style %q, want %q", p.LastAuthStyle(), style)
				}
				if p.RefreshCount() != 1 {
					t.Fatalf("RefreshCount = %d, want 1", p.RefreshCount())
				}
				if got.AccessToken.IsZero() || got.AccessToken.Equal(initial.AccessToken) {
					t.Fatal("no new access token")
				}
				if !p.AccessTokenValid(got.AccessToken) || p.AccessTokenValid(initial.AccessToken) {
					t.Fatal("provider should accept only the new access token")
				}
				// Rotation is on by default.
				if got.RefreshToken.IsZero() || got.RefreshToken.Equal(initial.RefreshToken) {
					t.Fatal("refresh token not rotated")
				}
				if p.RefreshTokenValid(initial.RefreshToken) {
					t.Fatal("old refresh token still valid after rotation")
				}
				if got.TokenType != "Bearer" || got.ExpiresIn != oauthtest.DefaultExpiresIn {
					t.Fatalf("token_type %q expires_in %d", got.TokenType, got.ExpiresIn)
				}
				if !slices.Equal(got.Scope, []string{"contacts.read", "contacts.write"}) {
					t.Fatalf("scope = %v", got.Scope)
				}
				// The rotated token works for the next refresh.
				if _, err := oauth.Refresh(t.Context(), p.Endpoint(), got.RefreshToken, nil); err != nil {
					t.Fatalf("second Refresh: %v", err)
				}
			})
		}
	}
}

func TestRefreshClientAuthRejected(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{AuthStyle: oauth.AuthStyleBasic})
	initial := p.IssueInitialToken(nil)

	wrongStyle := p.Endpoint()
	wrongStyle.AuthStyle = oauth.AuthStyleBody
	wrongSecret := p.Endpoint()
	wrongSecret.ClientSecret = secret.NewString("not-the-secret")
	for name, ep := range map[string]oauth.Endpoint{"wrong style": wrongStyle, "wrong secret": wrongSecret} {
		t.Run(name, func(t *testing.T) {
			_, err := oauth.Refresh(t.Context(), ep, initial.RefreshToken, nil)
			oe := oauthErr(t, err)
			if oe.HTTPStatus != http.StatusUnauthorized || oe.Code != "invalid_client" {
				t.Fatalf("got %d %q", oe.HTTPStatus, oe.Code)
			}
			if oauth.IsInvalidGrant(err) || oauth.IsTransient(err) {
				t.Fatal("invalid_client is neither invalid_grant nor transient")
			}
			assertNoSecrets(t, err, initial.RefreshToken, ep.ClientSecret)
		})
	}
}

func TestRefreshNoRotation(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	p.SetRotation(false)
	initial := p.IssueInitialToken(nil)
	got, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !got.RefreshToken.Equal(initial.RefreshToken) {
		t.Fatal("provider without rotation should answer the same refresh token")
	}
}

func TestRefreshOmittedMembers(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	p.SetOmitRefreshToken(true)
	p.SetOmitExpiresIn(true)
	p.SetOmitScope(true)
	initial := p.IssueInitialToken([]string{"a"})

	got, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The contract: an omitted refresh_token comes back zero; the caller
	// keeps the old one, which must still work.
	if !got.RefreshToken.IsZero() {
		t.Fatal("omitted refresh_token should come back zero")
	}
	if got.ExpiresIn != 0 {
		t.Fatalf("omitted expires_in = %d, want 0", got.ExpiresIn)
	}
	if got.Scope != nil {
		t.Fatalf("omitted scope = %v, want nil", got.Scope)
	}
	if _, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil); err != nil {
		t.Fatalf("the kept refresh token should still work: %v", err)
	}
}

func TestRefreshScopes(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	initial := p.IssueInitialToken([]string{"a", "b"})
	got, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Scope, []string{"a"}) {
		t.Fatalf("narrowed scope = %v", got.Scope)
	}
	p.SetGrantedScopes([]string{"a", "b", "admin"})
	got, err = oauth.Refresh(t.Context(), p.Endpoint(), got.RefreshToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := oauth.ScopeDrift(got.Scope, initial.Scope, []string{"a", "b"}); !slices.Equal(d, []string{"admin"}) {
		t.Fatalf("drift = %v, want [admin]", d)
	}
}

func TestRefreshInvalidGrant(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	initial := p.IssueInitialToken(nil)

	t.Run("unknown token", func(t *testing.T) {
		bogus := secret.NewString(oauthtest.RefreshTokenPrefix + "never-issued")
		_, err := oauth.Refresh(t.Context(), p.Endpoint(), bogus, nil)
		if !oauth.IsInvalidGrant(err) || oauth.IsTransient(err) {
			t.Fatalf("err = %v, want invalid_grant, not transient", err)
		}
		assertNoSecrets(t, err, bogus)
	})
	t.Run("injected, even with a 5xx status", func(t *testing.T) {
		p.SetNextRefreshError("invalid_grant", 500)
		_, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil)
		if !oauth.IsInvalidGrant(err) || oauth.IsTransient(err) {
			t.Fatalf("err = %v, want invalid_grant, not transient", err)
		}
		if oauthErr(t, err).HTTPStatus != 500 {
			t.Fatal("status not recorded")
		}
	})
	t.Run("reused rotated token", func(t *testing.T) {
		if _, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil); err != nil {
			t.Fatal(err)
		}
		_, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil)
		if !oauth.IsInvalidGrant(err) {
			t.Fatalf("err = %v, want invalid_grant", err)
		}
	})
}

func TestRefreshTransient(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	initial := p.IssueInitialToken(nil)
	cases := []struct {
		name    string
		set     func()
		status  int
		code    string
		transit bool
	}{
		{"500 server_error", func() { p.SetNextRefreshError("server_error", 500) }, 500, "server_error", true},
		{"503 html", func() { p.SetNextRefreshResponse(503, "text/html", []byte("<h1>down</h1>")) }, 503, "", true},
		{"429", func() { p.SetNextRefreshError("rate_limited", 429) }, 429, "rate_limited", true},
		{"temporarily_unavailable 400", func() { p.SetNextRefreshError("temporarily_unavailable", 400) }, 400, "temporarily_unavailable", true},
		{"404 html", func() { p.SetNextRefreshResponse(404, "text/html", []byte("nope")) }, 404, "", false},
		{"400 invalid_request", func() { p.SetNextRefreshError("invalid_request", 400) }, 400, "invalid_request", false},
		{"malformed JSON error body", func() { p.SetNextRefreshResponse(400, "application/json", []byte(`{"error":"invalid_gra`)) }, 400, "", false},
		{"error is not a string", func() { p.SetNextRefreshResponse(400, "application/json", []byte(`{"error":42}`)) }, 400, "", false},
		{"200 carrying an error", func() {
			p.SetNextRefreshResponse(200, "application/json", []byte(`{"error":"invalid_grant","error_description":"revoked"}`))
		}, 200, "invalid_grant", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.set()
			_, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil)
			oe := oauthErr(t, err)
			if oe.HTTPStatus != c.status || oe.Code != c.code {
				t.Fatalf("got %d %q, want %d %q", oe.HTTPStatus, oe.Code, c.status, c.code)
			}
			if oauth.IsTransient(err) != c.transit {
				t.Fatalf("IsTransient = %v, want %v", !c.transit, c.transit)
			}
			if strings.Contains(err.Error(), "<h1>") || strings.Contains(err.Error(), "nope") {
				t.Fatalf("error carries the response body: %q", err)
			}
			assertNoSecrets(t, err, initial.RefreshToken)
		})
	}
}

func TestRefreshTimeoutIsTransient(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	initial := p.IssueInitialToken(nil)
	p.SetRefreshDelay(time.Hour) // the provider stops waiting when the client hangs up
	ep := p.Endpoint()
	ep.Timeout = 20 * time.Millisecond
	_, err := oauth.Refresh(t.Context(), ep, initial.RefreshToken, nil)
	if !oauth.IsTransient(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a transient deadline error", err)
	}
	assertNoSecrets(t, err, initial.RefreshToken)
}

func TestRefreshCallerCancelIsNotTransient(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	initial := p.IssueInitialToken(nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := oauth.Refresh(ctx, p.Endpoint(), initial.RefreshToken, nil)
	if !errors.Is(err, context.Canceled) || oauth.IsTransient(err) {
		t.Fatalf("err = %v, want context.Canceled, not transient", err)
	}
}

func TestRefreshConnectionRefusedIsTransient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	rt := secret.NewString(oauthtest.RefreshTokenPrefix + "refused")
	_, err = oauth.Refresh(t.Context(), oauth.Endpoint{TokenURL: "http://" + addr + "/token", ClientID: "c"}, rt, nil)
	if !oauth.IsTransient(err) || oauth.IsInvalidGrant(err) {
		t.Fatalf("err = %v, want transient", err)
	}
	assertNoSecrets(t, err, rt)
}

func TestResponseSizeBounded(t *testing.T) {
	big := `{"access_token":"` + strings.Repeat("a", oauth.MaxResponseBytes) + `"}`
	t.Run("chunked", func(t *testing.T) {
		p := oauthtest.New(t, oauthtest.Config{})
		initial := p.IssueInitialToken(nil)
		for _, status := range []int{200, 400} {
			p.SetNextRefreshResponse(status, "application/json", []byte(big))
			_, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil)
			if !errors.Is(err, oauth.ErrResponseTooLarge) || oauth.IsTransient(err) {
				t.Fatalf("status %d: err = %v, want ErrResponseTooLarge", status, err)
			}
		}
	})
	t.Run("content-length", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			_, _ = w.Write([]byte(big))
		}))
		t.Cleanup(srv.Close)
		_, err := oauth.Refresh(t.Context(), oauth.Endpoint{TokenURL: srv.URL, ClientID: "c"}, secret.NewString("rt"), nil)
		if !errors.Is(err, oauth.ErrResponseTooLarge) {
			t.Fatalf("err = %v, want ErrResponseTooLarge", err)
		}
	})
}

func TestProviderEchoingTokensDoesNotLeak(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	p.SetEchoTokens(true)
	initial := p.IssueInitialToken(nil)
	rt := initial.RefreshToken.Reveal()

	t.Run("echo in description", func(t *testing.T) {
		p.SetNextRefreshError("invalid_grant", 400)
		_, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil)
		if !oauth.IsInvalidGrant(err) {
			t.Fatalf("err = %v", err)
		}
		if d := oauthErr(t, err).Description; !strings.Contains(d, secret.Redacted) {
			t.Fatalf("description %q should show where the token was scrubbed", d)
		}
		assertNoSecrets(t, err, initial.RefreshToken)
	})
	t.Run("echo as the error code", func(t *testing.T) {
		p.SetNextRefreshResponse(400, "application/json", []byte(`{"error":"`+rt+`","error_description":"`+rt[:10]+`\u0000`+rt[10:]+`"}`))
		_, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil)
		oe := oauthErr(t, err)
		if oe.Code != "" {
			t.Fatalf("code %q should have been dropped", oe.Code)
		}
		if strings.Contains(oe.Description, rt[10:]) || !strings.Contains(oe.Description, secret.Redacted) {
			t.Fatalf("token split by a control character survived: %q", oe.Description)
		}
		assertNoSecrets(t, err, initial.RefreshToken)
	})
	t.Run("echo in a 200 error", func(t *testing.T) {
		p.SetNextRefreshResponse(200, "application/json", []byte(`{"error":"invalid_grant","error_description":"bad token `+rt+`"}`))
		_, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil)
		if !oauth.IsInvalidGrant(err) {
			t.Fatalf("err = %v", err)
		}
		assertNoSecrets(t, err, initial.RefreshToken)
	})
	t.Run("echo in a malformed 200", func(t *testing.T) {
		p.SetNextRefreshResponse(200, "application/json", []byte(`{"access_token":"`+rt+`" "oops"}`))
		_, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil)
		if !errors.Is(err, oauth.ErrInvalidTokenResponse) {
			t.Fatalf("err = %v", err)
		}
		assertNoSecrets(t, err, initial.RefreshToken)
	})
	t.Run("revocation error echo", func(t *testing.T) {
		p.SetNextRevokeError("unsupported_token_type", 400)
		err := oauth.Revoke(t.Context(), p.Endpoint(), initial.AccessToken, "access_token")
		if oauthErr(t, err).Code != "unsupported_token_type" {
			t.Fatalf("err = %v", err)
		}
		assertNoSecrets(t, err, initial.AccessToken)
	})
}

// A non-HTTP answer makes net/http quote what the server sent; a server that
// sends our refresh token back must not get it into the error.
func TestTransportErrorScrubbed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rt := secret.NewString(oauthtest.RefreshTokenPrefix + "echoed-in-status-line")
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for range 100 { // headers; the body is not needed
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		_, _ = c.Write([]byte("BOGUS " + rt.Reveal() + "\r\n\r\n"))
	}()
	_, err = oauth.Refresh(t.Context(), oauth.Endpoint{TokenURL: "http://" + ln.Addr().String(), ClientID: "c"}, rt, nil)
	if err == nil || !oauth.IsTransient(err) {
		t.Fatalf("err = %v, want a transient transport error", err)
	}
	assertNoSecrets(t, err, rt)
}

func TestRedirectNotFollowed(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	initial := p.IssueInitialToken(nil)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, p.URL()+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	ep := p.Endpoint()
	ep.TokenURL = redirector.URL + "/token"
	ep.RevocationURL = redirector.URL + "/revoke"

	_, err := oauth.Refresh(t.Context(), ep, initial.RefreshToken, nil)
	if !errors.Is(err, oauth.ErrRedirect) || oauth.IsTransient(err) {
		t.Fatalf("Refresh err = %v, want ErrRedirect", err)
	}
	err = oauth.Revoke(t.Context(), ep, initial.RefreshToken, "refresh_token")
	if !errors.Is(err, oauth.ErrRedirect) {
		t.Fatalf("Revoke err = %v, want ErrRedirect", err)
	}
	if p.RefreshCount() != 0 || len(p.Revoked()) != 0 {
		t.Fatal("the redirect was followed to the provider")
	}
	// The caller's client keeps its own redirect policy.
	if ep.HTTPClient.CheckRedirect != nil {
		t.Fatal("caller's http.Client was modified")
	}
}

func TestRevoke(t *testing.T) {
	for _, style := range []string{oauth.AuthStyleBasic, oauth.AuthStyleBody} {
		t.Run(style, func(t *testing.T) {
			p := oauthtest.New(t, oauthtest.Config{AuthStyle: style, TLS: true})
			initial := p.IssueInitialToken(nil)
			if err := oauth.Revoke(t.Context(), p.Endpoint(), initial.RefreshToken, "refresh_token"); err != nil {
				t.Fatalf("Revoke: %v", err)
			}
			if p.LastAuthStyle() != style || !p.IsRevoked(initial.RefreshToken) {
				t.Fatalf("provider saw style %q, revoked=%v", p.LastAuthStyle(), p.IsRevoked(initial.RefreshToken))
			}
			// RFC 7009 §2.2: an already-invalid token is still a 200.
			if err := oauth.Revoke(t.Context(), p.Endpoint(), initial.AccessToken, "access_token"); err != nil {
				t.Fatalf("Revoke of a dead token: %v", err)
			}
			_, err := oauth.Refresh(t.Context(), p.Endpoint(), initial.RefreshToken, nil)
			if !oauth.IsInvalidGrant(err) {
				t.Fatalf("refresh after revocation: %v, want invalid_grant", err)
			}
		})
	}
	t.Run("errors", func(t *testing.T) {
		p := oauthtest.New(t, oauthtest.Config{})
		tok := p.IssueInitialToken(nil).RefreshToken
		p.SetNextRevokeError("unsupported_token_type", 400)
		err := oauth.Revoke(t.Context(), p.Endpoint(), tok, "refresh_token")
		if oe := oauthErr(t, err); oe.Op != "revoke" || oe.Code != "unsupported_token_type" || oauth.IsTransient(err) {
			t.Fatalf("err = %v", err)
		}
		p.SetNextRevokeError("", 503)
		if err := oauth.Revoke(t.Context(), p.Endpoint(), tok, ""); !oauth.IsTransient(err) {
			t.Fatalf("503: err = %v, want transient", err)
		}
		if p.IsRevoked(tok) {
			t.Fatal("failed revocations recorded as revoked")
		}
		assertNoSecrets(t, err, tok)
	})
	t.Run("no endpoint", func(t *testing.T) {
		p := oauthtest.New(t, oauthtest.Config{})
		ep := p.Endpoint()
		ep.RevocationURL = ""
		err := oauth.Revoke(t.Context(), ep, secret.NewString("x"), "")
		if !errors.Is(err, oauth.ErrNoRevocationEndpoint) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestEndpointValidation(t *testing.T) {
	good := oauth.Endpoint{TokenURL: "http://127.0.0.1:1/token", RevocationURL: "http://127.0.0.1:1/revoke", ClientID: "c"}
	mod := func(f func(*oauth.Endpoint)) oauth.Endpoint { e := good; f(&e); return e }
	rt := secret.NewString("rt")
	cases := map[string]struct {
		ep   oauth.Endpoint
		tok  secret.String
		want error
	}{
		"bad style":      {mod(func(e *oauth.Endpoint) { e.AuthStyle = "jwt" }), rt, oauth.ErrInvalidEndpoint},
		"no client id":   {mod(func(e *oauth.Endpoint) { e.ClientID = "" }), rt, oauth.ErrInvalidEndpoint},
		"no client id 2": {mod(func(e *oauth.Endpoint) { e.ClientID = ""; e.AuthStyle = oauth.AuthStyleBody }), rt, oauth.ErrInvalidEndpoint},
		"no token url":   {mod(func(e *oauth.Endpoint) { e.TokenURL = "" }), rt, oauth.ErrInvalidEndpoint},
		"relative url":   {mod(func(e *oauth.Endpoint) { e.TokenURL = "/token"; e.RevocationURL = "/revoke" }), rt, oauth.ErrInvalidEndpoint},
		"ftp url":        {mod(func(e *oauth.Endpoint) { e.TokenURL = "ftp://h/t"; e.RevocationURL = "ftp://h/r" }), rt, oauth.ErrInvalidEndpoint},
		"empty token":    {good, secret.String{}, oauth.ErrEmptyToken},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := oauth.Refresh(t.Context(), c.ep, c.tok, nil); !errors.Is(err, c.want) || oauth.IsTransient(err) {
				t.Fatalf("Refresh err = %v, want %v", err, c.want)
			}
			if c.ep.TokenURL == "" {
				return // the revocation URL is fine there
			}
			if err := oauth.Revoke(t.Context(), c.ep, c.tok, ""); !errors.Is(err, c.want) {
				t.Fatalf("Revoke err = %v, want %v", err, c.want)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	e := &oauth.Error{Op: "refresh", HTTPStatus: 400, Code: "invalid_grant", Description: "secret-ish text"}
	if got := e.Error(); got != "oauth: refresh: provider answered HTTP 400 (invalid_grant)" {
		t.Fatalf("Error() = %q", got)
	}
	if strings.Contains(e.Error(), "secret-ish") {
		t.Fatal("description must not be in Error()")
	}
	if oauth.IsTransient(nil) || oauth.IsInvalidGrant(nil) || oauth.IsTransient(errors.New("x")) {
		t.Fatal("nil / foreign errors are neither")
	}
}

func TestParseAuthStyle(t *testing.T) {
	for in, want := range map[string]string{"": oauth.AuthStyleBasic, "basic": oauth.AuthStyleBasic, "body": oauth.AuthStyleBody} {
		if got, err := oauth.ParseAuthStyle(in); got != want || err != nil {
			t.Errorf("ParseAuthStyle(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"header", "Basic", "jwt", " body"} {
		_, err := oauth.ParseAuthStyle(in)
		if err == nil || err.Error() != `not allowed (want "basic" or "body")` || !errors.Is(err, oauth.ErrInvalidEndpoint) {
			t.Errorf("ParseAuthStyle(%q): %v", in, err)
		}
	}
}
