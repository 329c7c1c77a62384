package oauthtest_test

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

func apiCall(t *testing.T, p *oauthtest.Provider, method, path string, tok secret.String, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, p.APIBaseURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if !tok.IsZero() {
		req.Header.Set("Authorization", "Bearer "+tok.Reveal())
	}
	req.Header.Set("X-Custom", "v1")
	c := p.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestAPIRequiresCurrentBearer(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{TLS: true})
	tok := p.IssueInitialToken([]string{"a"})
	if r := apiCall(t, p, "GET", "/x", secret.String{}, ""); r.StatusCode != 401 || !strings.Contains(r.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("no token: %d", r.StatusCode)
	}
	if r := apiCall(t, p, "GET", "/x", secret.NewString("bogus"), ""); r.StatusCode != 401 {
		t.Fatalf("bogus token: %d", r.StatusCode)
	}
	if r := apiCall(t, p, "GET", "/x", tok.AccessToken, ""); r.StatusCode != 200 {
		t.Fatalf("current token: %d", r.StatusCode)
	}
	fresh, err := oauth.Refresh(t.Context(), p.Endpoint(), tok.RefreshToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := apiCall(t, p, "GET", "/x", tok.AccessToken, ""); r.StatusCode != 401 {
		t.Fatalf("superseded token still accepted: %d", r.StatusCode)
	}
	if r := apiCall(t, p, "GET", "/x", fresh.AccessToken, ""); r.StatusCode != 200 {
		t.Fatalf("refreshed token: %d", r.StatusCode)
	}
	if err := oauth.Revoke(t.Context(), p.Endpoint(), fresh.AccessToken, "access_token"); err != nil {
		t.Fatal(err)
	}
	if r := apiCall(t, p, "GET", "/x", fresh.AccessToken, ""); r.StatusCode != 401 {
		t.Fatalf("revoked token still accepted: %d", r.StatusCode)
	}
	if n := len(p.APIRequests()); n != 2 {
		t.Fatalf("recorded %d authorised API requests, want 2", n)
	}
}

func TestAPIEcho(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	tok := p.IssueInitialToken(nil)
	r := apiCall(t, p, "POST", "/contacts/1?q=a%20b&q=c", tok.AccessToken, "hello")
	var echo oauthtest.EchoResponse
	if err := json.NewDecoder(r.Body).Decode(&echo); err != nil {
		t.Fatal(err)
	}
	if echo.Method != "POST" || echo.Path != "/api/contacts/1" || echo.RawQuery != "q=a%20b&q=c" ||
		len(echo.Query["q"]) != 2 || echo.Query["q"][0] != "a b" || echo.Body != "hello" || !echo.BearerOK {
		t.Fatalf("echo = %+v", echo)
	}
	if echo.Headers["X-Custom"][0] != "v1" || echo.Headers["Authorization"] != nil {
		t.Fatalf("headers = %v", echo.Headers)
	}
	last := p.APIRequests()[0]
	if last.Method != "POST" || string(last.Body) != "hello" || last.Header.Get("Authorization") != "" || last.Header.Get("X-Custom") != "v1" {
		t.Fatalf("recorded = %+v", last)
	}
	r = apiCall(t, p, "PUT", "/bin", tok.AccessToken, "\xff\xfe")
	echo = oauthtest.EchoResponse{}
	if err := json.NewDecoder(r.Body).Decode(&echo); err != nil || echo.BodyBase64 != "//4=" || echo.Body != "" {
		t.Fatalf("binary echo = %+v, %v", echo, err)
	}
}

func TestAPIReflectToken(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	tok := p.IssueInitialToken(nil)
	r := apiCall(t, p, "GET", "/reflect-token?split=3", tok.AccessToken, "")
	at := tok.AccessToken.Reveal()
	if r.Header.Get("X-Reflected-Token") != at || r.Header.Get("X-Reflected-Authorization") != "Bearer "+at {
		t.Fatal("token not reflected in headers")
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := "token=" + at + "\nagain=" + at + "\nend\n"; string(b) != want {
		t.Fatalf("body = %q", b)
	}
	// The token was written in two flushed pieces: chunked, not one write.
	if len(r.TransferEncoding) == 0 || r.TransferEncoding[0] != "chunked" {
		t.Fatalf("transfer encoding %v, want chunked", r.TransferEncoding)
	}
}

// ?enc= spells the reflected token another way, in headers and body, and
// ReflectHandler does the same for a token the provider did not issue.
func TestAPIReflectTokenEncodings(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	tok := p.IssueInitialToken(nil)
	at := tok.AccessToken.Reveal()
	r := apiCall(t, p, "GET", "/reflect-token?enc=base64-bearer", tok.AccessToken, "")
	want := base64.StdEncoding.EncodeToString([]byte("Bearer " + at))
	if b, _ := io.ReadAll(r.Body); r.Header.Get("X-Reflected-Token") != want || !strings.Contains(string(b), "again="+want+"\n") {
		t.Fatalf("base64-bearer: header %q body %q", r.Header.Get("X-Reflected-Token"), b)
	}
	if r := apiCall(t, p, "GET", "/reflect-token?enc=rot13", tok.AccessToken, ""); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown enc: %d", r.StatusCode)
	}
	srv := httptest.NewServer(oauthtest.ReflectHandler())
	t.Cleanup(srv.Close)
	const odd = "any/+=token+x/y="
	for enc, want := range map[string]string{
		"pct-lower": "any%2f%2b%3dtoken%2bx%2fy%3d", "json-u": `any\u002f\u002b\u003dtoken\u002bx\u002fy\u003d`,
		"form": "any/ =token x/y=", "hex": hex.EncodeToString([]byte(odd)),
	} {
		req, err := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/api/reflect-token?enc="+enc, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+odd)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Reflected-Token"); got != want {
			t.Errorf("enc=%s: %q, want %q", enc, got, want)
		}
	}
	if len(oauthtest.ReflectEncodings()) < 10 {
		t.Errorf("encodings: %v", oauthtest.ReflectEncodings())
	}
}

func TestAPIRedirectStatusStream(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{})
	tok := p.IssueInitialToken(nil)
	r := apiCall(t, p, "GET", "/redirect?to=https://elsewhere.example/x", tok.AccessToken, "")
	if r.StatusCode != 302 || r.Header.Get("Location") != "https://elsewhere.example/x" {
		t.Fatalf("redirect: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	for _, c := range []struct {
		path string
		want int
	}{{"/status/503", 503}, {"/status/204", 204}, {"/status/418", 418}, {"/status/99", 400}, {"/status/x", 400}} {
		if r := apiCall(t, p, "GET", c.path, tok.AccessToken, ""); r.StatusCode != c.want {
			t.Fatalf("%s: %d, want %d", c.path, r.StatusCode, c.want)
		}
	}
	r = apiCall(t, p, "GET", "/stream?n=7&size=3", tok.AccessToken, "")
	sc := bufio.NewScanner(r.Body)
	n := 0
	for sc.Scan() {
		if !strings.HasSuffix(sc.Text(), ":xxx") {
			t.Fatalf("chunk %q", sc.Text())
		}
		n++
	}
	if n != 7 {
		t.Fatalf("%d chunks, want 7", n)
	}
}

func TestConcurrentRefreshWithRotation(t *testing.T) {
	p := oauthtest.New(t, oauthtest.Config{AuthStyle: oauth.AuthStyleBody})
	tok := p.IssueInitialToken(nil)
	const n = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, invalid := 0, 0
	for range n {
		wg.Go(func() {
			_, err := oauth.Refresh(t.Context(), p.Endpoint(), tok.RefreshToken, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case oauth.IsInvalidGrant(err):
				invalid++
			default:
				t.Errorf("unexpected: %v", err)
			}
		})
		_ = p.RefreshCount() // knobs and observers race with handlers safely
	}
	wg.Wait()
	if ok != 1 || invalid != n-1 || p.RefreshCount() != n {
		t.Fatalf("ok=%d invalid_grant=%d count=%d: rotation must let exactly one through", ok, invalid, p.RefreshCount())
	}
}

func TestTokenResponseJSON(t *testing.T) {
	p := oauthtest.NewProvider(oauthtest.Config{})
	tok := p.IssueInitialToken([]string{"a", "b"})
	b := oauthtest.TokenResponseJSON(tok)
	if !strings.Contains(string(b), tok.AccessToken.Reveal()) {
		t.Fatal("TokenResponseJSON must carry the real values")
	}
	back, err := oauth.ParseTokenJSON(b)
	if err != nil || !back.RefreshToken.Equal(tok.RefreshToken) || back.ExpiresIn != oauthtest.DefaultExpiresIn || len(back.Scope) != 2 {
		t.Fatalf("round trip: %v", err)
	}
	if !strings.HasPrefix(tok.AccessToken.Reveal(), oauthtest.AccessTokenPrefix) || !strings.HasPrefix(tok.RefreshToken.Reveal(), oauthtest.RefreshTokenPrefix) {
		t.Fatal("tokens lack their distinctive prefixes")
	}
}
