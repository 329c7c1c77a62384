package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// TestMain lets the test binary stand in for the command, so the SIGTERM
// test runs the real main() in a child process without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("DEVPROVIDER_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func writeSecret(t *testing.T, s string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "client-secret")
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// syncBuffer is a concurrency-safe stderr sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestRunServesAndStops(t *testing.T) {
	const clientSecret = "dev secret: with+odd/chars"
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-client-id", "dev-id", "-client-secret-file", writeSecret(t, clientSecret)}, pw, stderr)
		pw.Close()
	}()

	line, err := bufio.NewReader(pr).ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading ready line: %v (stderr: %s)", err, stderr)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	var ready Ready
	if err := json.Unmarshal(line, &ready); err != nil {
		t.Fatalf("ready line %q: %v", line, err)
	}
	if !ready.DevOnly || !strings.HasPrefix(ready.TokenURL, "http://127.0.0.1:") || ready.ClientID != "dev-id" {
		t.Fatalf("ready = %+v", ready)
	}

	// The dev script's flow: get an initial token, then vaultd refreshes,
	// calls the API and revokes.
	resp, err := http.PostForm(ready.AuthorizeURL, url.Values{"scope": {"contacts.read"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	initial, err := oauth.ParseTokenJSON(body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("authorize-dev: %d %v", resp.StatusCode, err)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatal("token response must not be cacheable")
	}
	ep := oauth.Endpoint{TokenURL: ready.TokenURL, RevocationURL: ready.RevocationURL, ClientID: "dev-id",
		ClientSecret: secret.NewString(clientSecret), AuthStyle: ready.AuthStyle}
	tok, err := oauth.Refresh(t.Context(), ep, initial.RefreshToken, nil)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if len(tok.Scope) != 1 || tok.Scope[0] != "contacts.read" {
		t.Fatalf("scope = %v", tok.Scope)
	}
	req, _ := http.NewRequest("GET", ready.APIBaseURL+"/contacts?x=1", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken.Reveal())
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("API status %d", resp.StatusCode)
	}
	if err := oauth.Revoke(t.Context(), ep, tok.RefreshToken, "refresh_token"); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if _, err := oauth.Refresh(t.Context(), ep, tok.RefreshToken, nil); !oauth.IsInvalidGrant(err) {
		t.Fatalf("refresh after revoke: %v", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	logs := stderr.String()
	if !strings.Contains(logs, "dev-only stand-in") || !strings.Contains(logs, "/authorize-dev") {
		t.Fatalf("logs missing expected lines: %s", logs)
	}
	for _, s := range []string{initial.AccessToken.Reveal(), initial.RefreshToken.Reveal(), tok.AccessToken.Reveal(), clientSecret} {
		if strings.Contains(logs, s) {
			t.Fatal("a secret reached the log")
		}
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	secretFile := writeSecret(t, "s")
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]string{
		"no secret file":    {},
		"empty secret":      {"-client-secret-file", empty},
		"missing secret":    {"-client-secret-file", filepath.Join(t.TempDir(), "nope")},
		"non-loopback":      {"-client-secret-file", secretFile, "-listen", "0.0.0.0:0"},
		"bad auth style":    {"-client-secret-file", secretFile, "-auth-style", "jwt"},
		"cert without key":  {"-client-secret-file", secretFile, "-tls-cert", "x.pem"},
		"extra argument":    {"-client-secret-file", secretFile, "extra"},
		"relative redirect": {"-client-secret-file", secretFile, "-redirect-uri", "/cb"},
		"redirect fragment": {"-client-secret-file", secretFile, "-redirect-uri", "https://x.example/cb#f"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(t.Context(), args, &out, &errOut)
			if err == nil {
				t.Fatal("run accepted bad flags")
			}
			if out.Len() != 0 {
				t.Fatalf("printed a ready line despite failing: %q", out.String())
			}
		})
	}
}

func TestSIGTERMExitsCleanly(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-client-secret-file", writeSecret(t, "s"))
	cmd.Env = append(os.Environ(), "DEVPROVIDER_TEST_RUN_MAIN=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		t.Fatalf("ready line: %v (stderr: %s)", err, stderr.String())
	}
	var ready Ready
	if err := json.Unmarshal(line, &ready); err != nil || ready.BaseURL == "" {
		t.Fatalf("ready line %q: %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil { // a non-zero exit is an *exec.ExitError
		t.Fatalf("exit after SIGTERM: %v (stderr: %s)", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "shutting down") {
		t.Fatalf("no graceful shutdown logged: %s", stderr.String())
	}
}

// TestDoesNotLinkTesting: the stand-in is built from internal/fakeprovider,
// not from the test kit, so the binary does not carry the testing package
// (and its flags) like a test binary would.
func TestDoesNotLinkTesting(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "testing" || strings.HasSuffix(dep, "/oauthtest") {
			t.Errorf("vaultd-devprovider depends on %s", dep)
		}
	}
}

// TestRunConsentFlow: the consent page is served, its Allow button sends
// the browser back to the -redirect-uri with a code, state and iss, and
// the code exchanges at /token. Nothing secret reaches the log.
func TestRunConsentFlow(t *testing.T) {
	const clientSecret = "dev secret 2"
	const redirectURI = "http://127.0.0.1:9/oauth/callback"
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-client-id", "dev-id", "-client-secret-file", writeSecret(t, clientSecret),
			"-redirect-uri", redirectURI, "-require-pkce"}, pw, stderr)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading ready line: %v (stderr: %s)", err, stderr)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	var ready Ready
	if err := json.Unmarshal(line, &ready); err != nil {
		t.Fatal(err)
	}
	if ready.AuthorizationEndpoint != ready.BaseURL+"/authorize" || ready.Issuer != ready.BaseURL {
		t.Fatalf("ready = %+v", ready)
	}

	verifier, challenge, err := oauth.NewPKCE()
	if err != nil {
		t.Fatal(err)
	}
	state, _ := oauth.NewState()
	authURL, err := oauth.AuthorizeURL(oauth.AuthorizeRequest{AuthorizationURL: ready.AuthorizationEndpoint, ClientID: "dev-id",
		RedirectURI: redirectURI, Scopes: []string{"contacts.read"}, State: state, CodeChallenge: challenge})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "Fake provider: authorize dev-id") {
		t.Fatalf("consent page: %d %s", resp.StatusCode, page)
	}
	_, rest, _ := strings.Cut(string(page), `name="form_token" value="`)
	formToken, _, _ := strings.Cut(rest, `"`)
	resp, err = hc.PostForm(ready.BaseURL+"/authorize/decision", url.Values{"form_token": {formToken}, "decision": {"allow"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc.String(), redirectURI+"?") {
		t.Fatalf("decision: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	cb, err := oauth.ParseCallback(loc.RawQuery)
	if err != nil {
		t.Fatal(err)
	}
	if !cb.State.Equal(state) || oauth.CheckIssuer(cb, ready.Issuer, true) != nil {
		t.Fatalf("callback state/iss wrong (iss %q)", cb.Iss)
	}
	ep := oauth.Endpoint{TokenURL: ready.TokenURL, ClientID: "dev-id", ClientSecret: secret.NewString(clientSecret), AuthStyle: ready.AuthStyle}
	tok, err := oauth.Exchange(t.Context(), ep, cb.Code, redirectURI, verifier)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if len(tok.Scope) != 1 || tok.Scope[0] != "contacts.read" || tok.RefreshToken.IsZero() {
		t.Fatalf("token scope %v", tok.Scope)
	}

	// An unregistered redirect URI gets a page, never a redirect.
	bad := strings.Replace(authURL, url.QueryEscape(redirectURI), url.QueryEscape("https://evil.example/cb"), 1)
	resp, err = hc.Get(bad)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
		t.Fatalf("unregistered redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	logs := stderr.String()
	if !strings.Contains(logs, "/authorize/decision") {
		t.Fatalf("logs missing the decision: %s", logs)
	}
	for _, s := range []string{cb.Code.Reveal(), state.Reveal(), verifier.Reveal(), formToken, tok.AccessToken.Reveal(), clientSecret} {
		if strings.Contains(logs, s) {
			t.Fatal("a secret reached the log")
		}
	}
}
