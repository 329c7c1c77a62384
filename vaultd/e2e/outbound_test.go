package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// ---- helpers shared by the outbound, refresh, lifecycle and leak tests ----

// obResult is one raw API answer.
type obResult struct {
	Status int
	Header http.Header
	Body   []byte
}

// Code is the API error code of an error answer ("" otherwise).
func (r obResult) Code() string {
	var eb struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(r.Body, &eb) != nil {
		return ""
	}
	return eb.Error.Code
}

// obDo sends one request with hc and reads the whole answer. rawURL is
// used verbatim (the path is not cleaned or re-escaped).
func obDo(t testing.TB, hc *http.Client, method, rawURL string, hdr http.Header, body io.Reader) obResult {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, body)
	must(t, err)
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := hc.Do(req)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return obResult{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// obProxy calls /v1/integrations/{id}/proxy/{rawPath} as app.
func obProxy(t testing.TB, e *Env, hc *http.Client, id, method, rawPath string, hdr http.Header, body io.Reader) obResult {
	t.Helper()
	return obDo(t, hc, method, e.API+"/v1/integrations/"+id+"/proxy/"+rawPath, hdr, body)
}

// obExecute posts an execute request (any JSON-marshalable value).
func obExecute(t testing.TB, e *Env, hc *http.Client, id string, req any) obResult {
	t.Helper()
	b, err := json.Marshal(req)
	must(t, err)
	return obDo(t, hc, http.MethodPost, e.API+"/v1/integrations/"+id+"/execute",
		http.Header{"Content-Type": {"application/json"}}, bytes.NewReader(b))
}

// obHTTP1 is an HTTP/1.1-only client (the HTTP/2 client refuses to send
// connection-specific headers, which the hop-by-hop test needs).
func obHTTP1(e *Env, name string) *http.Client {
	tc := e.TLSConfig(name)
	tc.NextProtos = []string{"http/1.1"}
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: tc, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}},
		Timeout:   60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// obRevokeAtProvider revokes tok directly at the fake provider, as if the
// provider had invalidated it on its own (the vault still thinks it valid).
func obRevokeAtProvider(t testing.TB, e *Env, tok string) {
	t.Helper()
	form := url.Values{"token": {tok}}
	req, err := http.NewRequest(http.MethodPost, e.Provider.RevocationURL(), strings.NewReader(form.Encode()))
	must(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(e.Provider.ClientID()), url.QueryEscape(e.Provider.ClientSecret().Reveal()))
	resp, err := e.Provider.Client().Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("direct revoke at the provider: %d", resp.StatusCode)
	}
}

// obMetric returns the value of the first /metrics sample whose line
// starts with prefix (name plus optional labels), or -1.
func obMetric(t testing.TB, e *Env, prefix string) float64 {
	t.Helper()
	_, body := e.OpsGet("/metrics")
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			var v float64
			f := strings.Fields(line)
			if _, err := fmt.Sscan(f[len(f)-1], &v); err == nil {
				return v
			}
		}
	}
	return -1
}

// obAudit returns the audit export (all tenants) as parsed events.
func obAudit(t testing.TB, e *Env) []map[string]any {
	t.Helper()
	var sb strings.Builder
	if err := e.Client(Auditor).Audit(t.Context(), clientAuditAll(), &sb); err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(sb.String()), "\n") {
		if line == "" {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("bad audit line %q: %v", line, err)
		}
		out = append(out, ev)
	}
	return out
}

// hitCounter is a second origin that counts every request it gets: the
// place a token must never reach.
type hitCounter struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newHitCounter(t testing.TB) *hitCounter {
	h := &hitCounter{}
	h.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.hits.Add(1)
		_, _ = io.WriteString(w, "stolen")
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// ---- tests ----

// TestOutbound drives the proxy and execute paths through the real API:
// egress confinement, redirects, header hygiene, token redaction,
// streaming both ways and the forced refresh on an upstream 401.
func TestOutbound(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	tok := e.StoreToken(AppAcme, "crm")
	hc := e.HTTP(AppAcme)
	evil := newHitCounter(t)
	evilHost := strings.TrimPrefix(evil.srv.URL, "https://")

	t.Run("egress", func(t *testing.T) {
		apiBefore, refBefore := len(e.Provider.APIRequests()), e.Provider.RefreshCount()
		proxyAttacks := []string{
			"../token",
			"a/../../token",
			"contacts/../../token",
			"%2e%2e/token",
			"%2E%2e/token",
			".%2e/token",
			"%252e%252e/token",
			"a%2f..%2f..%2ftoken",
			"..%2ftoken",
			"%2e%2e%2f%2e%2e%2ftoken",
			"..%5c..%5ctoken",
			"a%5c..%5c..%5ctoken",
			"%5c%5c" + evilHost + "/x",
			"@" + evilHost + "/x",
			"x@" + evilHost + "/x",
			"/" + evilHost + "/x", // -> proxy//host
			"//" + evilHost + "/x",
			"https://" + evilHost + "/x",
			"https:%2f%2f" + evilHost + "/x",
			"https%3A%2F%2F" + evilHost + "%2Fx",
			"https%253A%252F%252F" + evilHost + "%252Fx",
			"HTTPS://" + evilHost,
		}
		for _, a := range proxyAttacks {
			for _, m := range []string{http.MethodGet, http.MethodPost} {
				r := obProxy(t, e, hc, "crm", m, a, nil, strings.NewReader("x"))
				if r.Status != http.StatusForbidden || r.Code() != "egress_denied" {
					t.Errorf("proxy %s %q: %d %s", m, a, r.Status, r.Body)
				}
			}
		}
		execAttacks := []string{
			"../token", "/../token", "a/../../token", "./../token", "%2e%2e/token", "%2e%2e%2ftoken",
			"..%2ftoken", "..\\token", "%5c%5c" + evilHost, "@" + evilHost + "/x", "x@" + evilHost,
			"//" + evilHost + "/x", "https://" + evilHost + "/x", "https%3A%2F%2F" + evilHost + "%2Fx",
			"\\\\" + evilHost + "\\x", "..", "contacts/..",
		}
		for _, a := range execAttacks {
			r := obExecute(t, e, hc, "crm", map[string]any{"method": "GET", "path": a})
			if r.Status != http.StatusForbidden || r.Code() != "egress_denied" {
				t.Errorf("execute %q: %d %s", a, r.Status, r.Body)
			}
		}
		if n := len(e.Provider.APIRequests()) - apiBefore; n != 0 {
			t.Errorf("the provider API saw %d requests from refused calls: %+v", n, e.Provider.APIRequests()[apiBefore:])
		}
		if e.Provider.RefreshCount() != refBefore || evil.hits.Load() != 0 {
			t.Errorf("refused calls reached the token endpoint (%d) or another origin (%d hits)",
				e.Provider.RefreshCount()-refBefore, evil.hits.Load())
		}
		// The check is not over-broad: ordinary paths pass, including an
		// encoded "@" (an e-mail address as an id), which cannot leave the
		// origin since the target's authority is fixed.
		if r := obProxy(t, e, hc, "crm", http.MethodGet, "users/a%40b.example/c%20d.e?q=1", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("ordinary path: %d %s", r.Status, r.Body)
		}
	})

	t.Run("redirects", func(t *testing.T) {
		for _, to := range []string{
			evil.srv.URL + "/steal",
			"//" + evilHost + "/steal",
			"/token",                         // same origin, outside api_base_url's path
			"/api/../token",                  // dot segments resolved outside it
			"https://user@" + evilHost + "/", // userinfo
		} {
			q := "to=" + url.QueryEscape(to)
			r := obProxy(t, e, hc, "crm", http.MethodGet, "redirect?"+q, nil, nil)
			if r.Status != http.StatusForbidden || r.Code() != "egress_denied" {
				t.Errorf("proxy redirect to %q: %d %s", to, r.Status, r.Body)
			}
			r = obExecute(t, e, hc, "crm", map[string]any{"method": "GET", "path": "redirect", "query": map[string]string{"to": to}})
			if r.Status != http.StatusForbidden || r.Code() != "egress_denied" {
				t.Errorf("execute redirect to %q: %d %s", to, r.Status, r.Body)
			}
		}
		if n := evil.hits.Load(); n != 0 {
			t.Fatalf("the other origin got %d hits", n)
		}
		// Inside the API: the 3xx goes back to the caller, not followed.
		before := len(e.Provider.APIRequests())
		r := obProxy(t, e, hc, "crm", http.MethodGet, "redirect?to="+url.QueryEscape("/api/contacts/2"), nil, nil)
		if r.Status != http.StatusFound || r.Header.Get("Location") != "/api/contacts/2" {
			t.Fatalf("same-origin redirect: %d %v %s", r.Status, r.Header, r.Body)
		}
		reqs := e.Provider.APIRequests()[before:]
		if len(reqs) != 1 || reqs[0].Path != "/api/redirect" {
			t.Fatalf("the redirect was followed: %+v", reqs)
		}
		r = obExecute(t, e, hc, "crm", map[string]any{"method": "GET", "path": "redirect", "query": map[string]string{"to": "/api/contacts/2"}})
		var er struct {
			Status  int               `json:"status"`
			Headers map[string]string `json:"headers"`
		}
		if r.Status != http.StatusOK || json.Unmarshal(r.Body, &er) != nil || er.Status != http.StatusFound || er.Headers["Location"] != "/api/contacts/2" {
			t.Fatalf("execute same-origin redirect: %d %s", r.Status, r.Body)
		}
	})

	t.Run("headers", func(t *testing.T) {
		// AppMulti needs X-Tenant-Context to reach acme: the assertion
		// itself must not travel on.
		h1 := obHTTP1(e, AppMulti)
		jwtTok := e.JWT("acme", "user-1", nil)
		before := len(e.Provider.APIRequests())
		r := obProxy(t, e, h1, "crm", http.MethodGet, "echo", http.Header{
			"Authorization":       {"Bearer caller-own-credential"},
			"Cookie":              {"session=caller-cookie"},
			"X-Tenant-Context":    {jwtTok},
			"Connection":          {"keep-alive, X-Hop-Custom"},
			"X-Hop-Custom":        {"hop"},
			"Keep-Alive":          {"timeout=5"},
			"Proxy-Authorization": {"Basic cHJveHk6cHc="},
			"Proxy-Connection":    {"keep-alive"},
			"Te":                  {"trailers"},
			"X-Forwarded-For":     {"10.0.0.1"},
			"X-App-Header":        {"kept"},
		}, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("echo: %d %s", r.Status, r.Body)
		}
		reqs := e.Provider.APIRequests()[before:]
		if len(reqs) != 1 {
			t.Fatalf("upstream saw %d requests", len(reqs))
		}
		got := reqs[0].Header
		for _, k := range []string{"Cookie", "X-Tenant-Context", "Connection", "X-Hop-Custom", "Keep-Alive",
			"Proxy-Authorization", "Proxy-Connection", "Te", "X-Forwarded-For"} {
			if v, ok := got[k]; ok {
				t.Errorf("upstream received %s: %q", k, v)
			}
		}
		if got.Get("X-App-Header") != "kept" {
			t.Errorf("an ordinary header was dropped: %v", got)
		}
		for k, vs := range got {
			for _, v := range vs {
				if strings.Contains(v, "caller-own-credential") || strings.Contains(v, "caller-cookie") || strings.Contains(v, jwtTok) {
					t.Errorf("caller credential reached upstream in %s", k)
				}
			}
		}
		// oauthtest records only requests whose bearer is the current
		// access token, so the caller's Authorization did not replace or
		// precede it; reflect shows the exact form upstream received.
		r = obProxy(t, e, hc, "crm", http.MethodGet, "reflect-token", http.Header{"Authorization": {"Bearer caller-own-credential"}}, nil)
		if r.Status != http.StatusOK || r.Header.Get("X-Reflected-Authorization") != "Bearer [REDACTED]" {
			t.Fatalf("reflect: %d %v", r.Status, r.Header)
		}
		if !e.Provider.AccessTokenValid(tok.AccessToken) {
			t.Fatal("the stored token is no longer current")
		}
		// execute: the same filter applies to its header map.
		before = len(e.Provider.APIRequests())
		r = obExecute(t, e, hc, "crm", map[string]any{"method": "GET", "path": "echo", "headers": map[string]string{
			"Authorization": "Bearer caller-own-credential", "Cookie": "a=b", "X-Tenant-Context": jwtTok,
			"Connection": "X-Hop-Custom", "X-Hop-Custom": "hop", "X-App-Header": "kept",
		}})
		if r.Status != http.StatusOK {
			t.Fatalf("execute echo: %d %s", r.Status, r.Body)
		}
		reqs = e.Provider.APIRequests()[before:]
		if len(reqs) != 1 || reqs[0].Header.Get("X-App-Header") != "kept" {
			t.Fatalf("execute upstream: %+v", reqs)
		}
		for _, k := range []string{"Cookie", "X-Tenant-Context", "Connection", "X-Hop-Custom"} {
			if _, ok := reqs[0].Header[k]; ok {
				t.Errorf("execute: upstream received %s", k)
			}
		}
	})

	t.Run("redaction", func(t *testing.T) {
		at := tok.AccessToken.Reveal()
		for _, split := range []int{0, 1, len(at) / 2, len(at) - 1, len(at)} {
			r := obProxy(t, e, hc, "crm", http.MethodGet, fmt.Sprintf("reflect-token?split=%d", split), nil, nil)
			if r.Status != http.StatusOK {
				t.Fatalf("reflect split=%d: %d %s", split, r.Status, r.Body)
			}
			want := "token=[REDACTED]\nagain=[REDACTED]\nend\n"
			if string(r.Body) != want {
				t.Errorf("split=%d body %q", split, r.Body)
			}
			if r.Header.Get("X-Reflected-Token") != "[REDACTED]" {
				t.Errorf("split=%d header %q", split, r.Header.Get("X-Reflected-Token"))
			}
			for k, vs := range r.Header {
				for _, v := range vs {
					if strings.Contains(v, oauthtest.AccessTokenPrefix) {
						t.Errorf("token in response header %s", k)
					}
				}
			}
		}
		r := obExecute(t, e, hc, "crm", map[string]any{"method": "GET", "path": "reflect-token", "query": map[string]string{"split": "7"}})
		if r.Status != http.StatusOK || bytes.Contains(r.Body, []byte(oauthtest.AccessTokenPrefix)) ||
			!bytes.Contains(r.Body, []byte(`token=[REDACTED]\nagain=[REDACTED]`)) || !bytes.Contains(r.Body, []byte(`"Bearer [REDACTED]"`)) {
			t.Fatalf("execute reflect: %d %s", r.Status, r.Body)
		}
	})

	t.Run("streaming", func(t *testing.T) {
		// Response: many flushed chunks arrive complete and in order.
		const n, size = 300, 1000
		r := obProxy(t, e, hc, "crm", http.MethodGet, fmt.Sprintf("stream?n=%d&size=%d", n, size), nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("stream: %d", r.Status)
		}
		lines := strings.Split(strings.TrimSuffix(string(r.Body), "\n"), "\n")
		if len(lines) != n {
			t.Fatalf("stream: %d lines", len(lines))
		}
		for i, l := range lines {
			if l != fmt.Sprintf("%d:%s", i, strings.Repeat("x", size)) {
				t.Fatalf("stream line %d wrong", i)
			}
		}
		// Request: a body of unknown length written piecewise through a
		// pipe while the request is in flight.
		pr, pw := io.Pipe()
		go func() {
			for i := range 50 {
				if _, err := fmt.Fprintf(pw, "part-%02d;", i); err != nil {
					return
				}
			}
			pw.Close()
		}()
		before := len(e.Provider.APIRequests())
		r = obProxy(t, e, hc, "crm", http.MethodPost, "upload", http.Header{"Content-Type": {"text/plain"}}, pr)
		if r.Status != http.StatusOK {
			t.Fatalf("upload: %d %s", r.Status, r.Body)
		}
		var want strings.Builder
		for i := range 50 {
			fmt.Fprintf(&want, "part-%02d;", i)
		}
		reqs := e.Provider.APIRequests()[before:]
		if len(reqs) != 1 || string(reqs[0].Body) != want.String() || reqs[0].Method != http.MethodPost {
			t.Fatalf("upstream got %+v", reqs)
		}
	})

	t.Run("upstream_401_forces_one_refresh", func(t *testing.T) {
		e.StoreToken(AppAcme, "revoked-upstream")
		cur := e.StoreToken(AppAcme, "revoked-upstream") // a fresh grant replaces the first
		obRevokeAtProvider(t, e, cur.AccessToken.Reveal())
		refBefore := e.Provider.RefreshCount()
		forcedBefore := max(obMetric(t, e, "vaultd_forced_refresh_total"), 0)
		r := obProxy(t, e, hc, "revoked-upstream", http.MethodGet, "contacts/9", nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET after upstream revocation: %d %s\n%s", r.Status, r.Body, e.Logs())
		}
		if got := e.Provider.RefreshCount() - refBefore; got != 1 {
			t.Fatalf("%d refreshes, want exactly 1", got)
		}
		if got := obMetric(t, e, "vaultd_forced_refresh_total"); got != forcedBefore+1 {
			t.Fatalf("vaultd_forced_refresh_total %v, want %v", got, forcedBefore+1)
		}
		md, err := e.Client(AppAcme).GetIntegration(t.Context(), "revoked-upstream")
		must(t, err)
		if md.RefreshCount != 1 || md.Status != "active" {
			t.Fatalf("metadata after forced refresh: %+v", md)
		}

		// A request that cannot be replayed (a streamed POST body) is not
		// retried: the caller gets the upstream's 401 as is, and the next
		// replayable call refreshes.
		post := e.StoreToken(AppAcme, "revoked-post")
		obRevokeAtProvider(t, e, post.AccessToken.Reveal())
		refBefore = e.Provider.RefreshCount()
		pr, pw := io.Pipe()
		go func() { _, _ = io.WriteString(pw, "streamed"); pw.Close() }()
		r = obProxy(t, e, hc, "revoked-post", http.MethodPost, "contacts", nil, pr)
		if r.Status != http.StatusUnauthorized || e.Provider.RefreshCount() != refBefore {
			t.Fatalf("streamed POST on a revoked token: %d %s, %d refreshes", r.Status, r.Body, e.Provider.RefreshCount()-refBefore)
		}
		if r = obProxy(t, e, hc, "revoked-post", http.MethodGet, "contacts", nil, nil); r.Status != http.StatusOK || e.Provider.RefreshCount() != refBefore+1 {
			t.Fatalf("GET after the 401: %d, %d refreshes", r.Status, e.Provider.RefreshCount()-refBefore)
		}
	})
}
