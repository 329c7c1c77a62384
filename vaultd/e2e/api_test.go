package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// apiResp is one raw API answer.
type apiResp struct {
	Status int
	Header http.Header
	Body   []byte
	Proto  string
}

// do sends one request and reads the whole answer. hdr is name, value pairs.
func do(t *testing.T, c *http.Client, method, url string, body []byte, hdr ...string) apiResp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	must(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return apiResp{Status: resp.StatusCode, Header: resp.Header, Body: b, Proto: resp.Proto}
}

// wantStatus fails unless r has the status.
func wantStatus(t *testing.T, r apiResp, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
}

// wantError checks the exact API error shape:
// {"error":{"code","message","request_id"}} and nothing else.
func wantError(t *testing.T, r apiResp, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d (%s): %s", r.Status, status, code, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type %q", ct)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &top); err != nil || len(top) != 1 || top["error"] == nil {
		t.Fatalf("error body is not {\"error\":{...}}: %s", r.Body)
	}
	var inner map[string]any
	if err := json.Unmarshal(top["error"], &inner); err != nil {
		t.Fatalf("error member: %v: %s", err, r.Body)
	}
	if got := sortedKeys(inner); !slices.Equal(got, []string{"code", "message", "request_id"}) {
		t.Fatalf("error keys %v: %s", got, r.Body)
	}
	for _, k := range []string{"code", "message", "request_id"} {
		if s, ok := inner[k].(string); !ok || s == "" {
			t.Fatalf("error.%s is not a non-empty string: %s", k, r.Body)
		}
	}
	if inner["code"] != code {
		t.Fatalf("code %v, want %s: %s", inner["code"], code, r.Body)
	}
	if rid := r.Header.Get("X-Request-Id"); rid != "" && rid != inner["request_id"] {
		t.Fatalf("request_id %v differs from X-Request-Id %s", inner["request_id"], rid)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func jsonObject(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %v: %s", err, b)
	}
	return m
}

func wantKeys(t *testing.T, m map[string]any, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := sortedKeys(m); !slices.Equal(got, want) {
		t.Fatalf("keys %v, want %v", got, want)
	}
}

var metadataKeys = []string{"id", "tenant_id", "provider", "scopes", "status", "expires_at", "created_at",
	"updated_at", "last_refresh_at", "last_used_at", "refresh_count", "consecutive_failures", "last_error",
	"api_base_url", "grant"}

// storeBody is a store_token request for tok.
func storeBody(provider string, tokJSON []byte) []byte {
	b, _ := json.Marshal(map[string]any{"provider": provider, "token": json.RawMessage(tokJSON)})
	return b
}

// binaryUpstream is a second provider API that answers bytes that are not
// UTF-8, to see execute's body_base64 on the way back. It accepts any
// bearer token (vaultd never refreshes the long-lived token stored for it).
type binaryUpstream struct {
	srv    *httptest.Server
	config string
}

var binaryBody = []byte{0xff, 0xfe, 0x00, 0x80, 'o', 'k', 0xc3}

func newBinaryUpstream(t *testing.T) *binaryUpstream {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer bin-") {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		in, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Got-Len", fmt.Sprint(len(in)))
		_, _ = w.Write(binaryBody)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "bin-ca.pem")
	must(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644))
	sec := filepath.Join(dir, "bin-secret")
	must(t, os.WriteFile(sec, []byte("bin-client-secret\n"), 0o600))
	cfg := fmt.Sprintf(`
[providers.binary]
token_url          = %q
api_base_url       = %q
client_id          = "bin"
client_secret_file = %q
auth_style         = "basic"
scopes             = ["read"]
ca_file            = %q
`, srv.URL+"/token", srv.URL+"/bin", sec, ca)
	return &binaryUpstream{srv: srv, config: cfg}
}

// TestAPI walks every row of the API table with its success shape, then
// every error code vaultd itself answers.
func TestAPI(t *testing.T) {
	bin := newBinaryUpstream(t)
	const maxBody = 8 << 10
	e := New(t, Options{MaxBodyBytes: maxBody, ExtraConfig: bin.config})
	op, app := e.HTTP(Operator), e.HTTP(AppAcme)
	api := e.API

	t.Run("tenants", func(t *testing.T) {
		r := do(t, op, "POST", api+"/v1/tenants", []byte(`{"id":"acme"}`))
		wantStatus(t, r, http.StatusCreated)
		m := jsonObject(t, r.Body)
		wantKeys(t, m, "id", "created_at", "kek_version", "dek_version", "status")
		if m["id"] != "acme" || m["kek_version"].(float64) < 1 || m["dek_version"].(float64) != 1 || m["status"] != "active" {
			t.Fatalf("tenant %s", r.Body)
		}
		if _, err := time.Parse(time.RFC3339Nano, m["created_at"].(string)); err != nil {
			t.Fatalf("created_at: %v", err)
		}
		g := do(t, op, "GET", api+"/v1/tenants/acme", nil)
		wantStatus(t, g, http.StatusOK)
		if !bytes.Equal(bytes.TrimSpace(g.Body), bytes.TrimSpace(r.Body)) {
			t.Fatalf("GET tenant %s differs from POST answer %s", g.Body, r.Body)
		}
		wantError(t, do(t, op, "POST", api+"/v1/tenants", []byte(`{"id":"acme"}`)), 409, "conflict")
		wantError(t, do(t, op, "GET", api+"/v1/tenants/nobody", nil), 404, "not_found")
		for _, body := range []string{`{"id":`, `not json`, `{"id":""}`, `{"id":"-bad"}`, `{"id":"a b"}`, `{"id":"../x"}`,
			`{"id":"` + strings.Repeat("a", 129) + `"}`, `{"id":1}`, `{"id":"x"} {}`, `[]`} {
			wantError(t, do(t, op, "POST", api+"/v1/tenants", []byte(body)), 400, "bad_request")
		}
		wantError(t, do(t, op, "POST", api+"/v1/tenants", bytes.Repeat([]byte(" "), maxBody+1)), 413, "payload_too_large")
	})

	var tok oauth.Token
	t.Run("store_token", func(t *testing.T) {
		tok = e.Provider.IssueInitialToken([]string{"contacts.read", "contacts.write"})
		tj := oauthtest.TokenResponseJSON(tok)
		r := do(t, app, "PUT", api+"/v1/integrations/crm", storeBody(ProviderName, tj))
		wantStatus(t, r, http.StatusOK)
		noTokenIn(t, r.Body, tok)
		m := jsonObject(t, r.Body)
		wantKeys(t, m, metadataKeys...)
		if m["id"] != "crm" || m["tenant_id"] != "acme" || m["provider"] != ProviderName || m["status"] != "active" ||
			fmt.Sprint(m["scopes"]) != "[contacts.read contacts.write]" || m["refresh_count"].(float64) != 0 ||
			m["consecutive_failures"].(float64) != 0 || m["last_error"] != "" {
			t.Fatalf("metadata %s", r.Body)
		}
		exp, err := time.Parse(time.RFC3339Nano, m["expires_at"].(string))
		if err != nil || exp.Before(time.Now()) {
			t.Fatalf("expires_at %v (%v)", m["expires_at"], err)
		}
	})

	t.Run("get_and_list", func(t *testing.T) {
		g := do(t, app, "GET", api+"/v1/integrations/crm", nil)
		wantStatus(t, g, http.StatusOK)
		noTokenIn(t, g.Body, tok)
		wantKeys(t, jsonObject(t, g.Body), metadataKeys...)
		l := do(t, app, "GET", api+"/v1/integrations", nil)
		wantStatus(t, l, http.StatusOK)
		noTokenIn(t, l.Body, tok)
		m := jsonObject(t, l.Body)
		wantKeys(t, m, "integrations")
		list := m["integrations"].([]any)
		if len(list) != 1 {
			t.Fatalf("list %s", l.Body)
		}
		wantKeys(t, list[0].(map[string]any), metadataKeys...)
		if list[0].(map[string]any)["id"] != "crm" {
			t.Fatalf("list %s", l.Body)
		}
		// An empty tenant lists [] (not null).
		e.CreateTenant("globex")
		gl := do(t, e.HTTP(AppGlobex), "GET", api+"/v1/integrations", nil)
		wantStatus(t, gl, http.StatusOK)
		if strings.TrimSpace(string(gl.Body)) != `{"integrations":[]}` {
			t.Fatalf("empty list %s", gl.Body)
		}
	})

	t.Run("proxy", func(t *testing.T) {
		n := len(e.Provider.APIRequests())
		r := do(t, app, "POST", api+"/v1/integrations/crm/proxy/contacts/1?a=1&b=two", []byte(`{"name":"x"}`), "X-Custom", "v")
		wantStatus(t, r, http.StatusOK)
		noTokenIn(t, r.Body, tok)
		var echo oauthtest.EchoResponse
		must(t, json.Unmarshal(r.Body, &echo))
		if echo.Method != "POST" || echo.Path != "/api/contacts/1" || echo.RawQuery != "a=1&b=two" || echo.Body != `{"name":"x"}` ||
			!echo.BearerOK || echo.Headers["X-Custom"][0] != "v" {
			t.Fatalf("upstream saw %+v", echo)
		}
		reqs := e.Provider.APIRequests()
		if len(reqs) != n+1 {
			t.Fatalf("upstream got %d requests", len(reqs)-n)
		}
		// The upstream's own status passes through.
		s := do(t, app, "GET", api+"/v1/integrations/crm/proxy/status/418", nil)
		if s.Status != 418 || s.Header.Get("X-Vaultd-Error") != "" {
			t.Fatalf("upstream status: %d %v", s.Status, s.Header)
		}
		md := jsonObject(t, do(t, app, "GET", api+"/v1/integrations/crm", nil).Body)
		if md["last_used_at"] == nil {
			t.Fatalf("last_used_at not set after a call: %v", md)
		}
	})

	t.Run("execute", func(t *testing.T) {
		req := `{"method":"POST","path":"/contacts/1","query":{"k":"v w"},"headers":{"Content-Type":"application/json","X-Custom":"1"},"body":"{\"a\":\"é\"}"}`
		r := do(t, app, "POST", api+"/v1/integrations/crm/execute", []byte(req))
		wantStatus(t, r, http.StatusOK)
		noTokenIn(t, r.Body, tok)
		m := jsonObject(t, r.Body)
		wantKeys(t, m, "status", "headers", "body")
		if m["status"].(float64) != 200 {
			t.Fatalf("execute %s", r.Body)
		}
		hdrs := m["headers"].(map[string]any)
		if !strings.HasPrefix(fmt.Sprint(hdrs["Content-Type"]), "application/json") {
			t.Fatalf("headers %v", hdrs)
		}
		for _, v := range hdrs {
			if _, ok := v.(string); !ok {
				t.Fatalf("header values must be strings: %v", hdrs)
			}
		}
		var echo oauthtest.EchoResponse
		must(t, json.Unmarshal([]byte(m["body"].(string)), &echo))
		if echo.Method != "POST" || echo.Path != "/api/contacts/1" || echo.Query["k"][0] != "v w" || echo.Body != `{"a":"é"}` ||
			echo.Headers["X-Custom"][0] != "1" || echo.Headers["Content-Type"][0] != "application/json" {
			t.Fatalf("upstream saw %+v", echo)
		}

		// A request body that is not UTF-8 travels as body_base64.
		raw := []byte{0x00, 0xff, 0xfe, 'z', 0x80}
		req = fmt.Sprintf(`{"method":"PUT","path":"blob","body_base64":%q}`, base64.StdEncoding.EncodeToString(raw))
		r = do(t, app, "POST", api+"/v1/integrations/crm/execute", []byte(req))
		wantStatus(t, r, http.StatusOK)
		m = jsonObject(t, r.Body)
		echo = oauthtest.EchoResponse{}
		must(t, json.Unmarshal([]byte(m["body"].(string)), &echo))
		if echo.Method != "PUT" || echo.BodyBase64 != base64.StdEncoding.EncodeToString(raw) {
			t.Fatalf("upstream saw %+v", echo)
		}
		// A GET without a body.
		r = do(t, app, "POST", api+"/v1/integrations/crm/execute", []byte(`{"method":"GET","path":"contacts"}`))
		wantStatus(t, r, http.StatusOK)
	})

	t.Run("execute_binary_response", func(t *testing.T) {
		r := do(t, app, "PUT", api+"/v1/integrations/blob",
			storeBody("binary", []byte(`{"access_token":"bin-123","token_type":"Bearer","expires_in":86400}`)))
		wantStatus(t, r, http.StatusOK)
		r = do(t, app, "POST", api+"/v1/integrations/blob/execute",
			[]byte(`{"method":"POST","path":"x","body_base64":"/w=="}`))
		wantStatus(t, r, http.StatusOK)
		m := jsonObject(t, r.Body)
		wantKeys(t, m, "status", "headers", "body_base64")
		got, err := base64.StdEncoding.DecodeString(m["body_base64"].(string))
		if err != nil || !bytes.Equal(got, binaryBody) {
			t.Fatalf("body_base64 %v (%v), want %x", m["body_base64"], err, binaryBody)
		}
		if h := m["headers"].(map[string]any); h["X-Got-Len"] != "1" {
			t.Fatalf("upstream got the wrong body: %v", h)
		}
		// The proxy route streams the same bytes raw.
		p := do(t, app, "GET", api+"/v1/integrations/blob/proxy/x", nil)
		if p.Status != 200 || !bytes.Equal(p.Body, binaryBody) {
			t.Fatalf("proxy binary %d %x", p.Status, p.Body)
		}
	})

	t.Run("bad_request", func(t *testing.T) {
		tj := oauthtest.TokenResponseJSON(e.Provider.IssueInitialToken([]string{"contacts.read"}))
		for name, body := range map[string][]byte{
			"malformed":        []byte(`{"provider":`),
			"not json":         []byte(`hello`),
			"unknown provider": storeBody("nope", tj),
			"no provider":      []byte(`{"token":` + string(tj) + `}`),
			"no token":         []byte(`{"provider":"example"}`),
			"token not object": []byte(`{"provider":"example","token":"abc"}`),
			"no access_token":  []byte(`{"provider":"example","token":{"token_type":"Bearer"}}`),
			"unknown field":    []byte(`{"provider":"example","token":` + string(tj) + `,"extra":1}`),
		} {
			t.Run(name, func(t *testing.T) {
				wantError(t, do(t, app, "PUT", api+"/v1/integrations/newone", body), 400, "bad_request")
			})
		}
		for _, id := range []string{"-x", "a%20b", "a%2Fb", strings.Repeat("i", 129)} {
			wantError(t, do(t, app, "PUT", api+"/v1/integrations/"+id, storeBody(ProviderName, tj)), 400, "bad_request")
		}
		for _, body := range []string{`{`, `{"method":"GET"}`, `{"path":"x"}`, `{"method":"G ET","path":"x"}`,
			`{"method":"GET","path":"x","body":"a","body_base64":"YQ=="}`, `{"method":"GET","path":"x","body_base64":"%%%"}`,
			`{"method":"GET","path":"x","query":{"a":1}}`, `{"method":"GET","path":"x","headers":{"Bad Name":"v"}}`,
			`{"method":"GET","path":"x","tenant_id":"globex"}`} {
			wantError(t, do(t, app, "POST", api+"/v1/integrations/crm/execute", []byte(body)), 400, "bad_request")
		}
		l := jsonObject(t, do(t, app, "GET", api+"/v1/integrations", nil).Body)["integrations"].([]any)
		for _, it := range l {
			if it.(map[string]any)["id"] == "newone" {
				t.Fatal("a refused store_token created an integration")
			}
		}
	})

	t.Run("payload_too_large", func(t *testing.T) {
		big := fmt.Sprintf(`{"provider":"example","token":{"access_token":"at","token_type":"Bearer","scope":%q}}`, strings.Repeat("s", maxBody))
		wantError(t, do(t, app, "PUT", api+"/v1/integrations/big", []byte(big)), 413, "payload_too_large")
		ex := fmt.Sprintf(`{"method":"POST","path":"x","body":%q}`, strings.Repeat("b", maxBody))
		wantError(t, do(t, app, "POST", api+"/v1/integrations/crm/execute", []byte(ex)), 413, "payload_too_large")
		// Just under the limit still works.
		ok := fmt.Sprintf(`{"method":"POST","path":"x","body":%q}`, strings.Repeat("b", 1000))
		wantStatus(t, do(t, app, "POST", api+"/v1/integrations/crm/execute", []byte(ok)), 200)
	})

	t.Run("not_found", func(t *testing.T) {
		wantError(t, do(t, app, "GET", api+"/v1/integrations/ghost", nil), 404, "not_found")
		wantError(t, do(t, app, "DELETE", api+"/v1/integrations/ghost", nil), 404, "not_found")
		wantError(t, do(t, app, "GET", api+"/v1/integrations/ghost/proxy/contacts", nil), 404, "not_found")
		wantError(t, do(t, app, "POST", api+"/v1/integrations/ghost/execute", []byte(`{"method":"GET","path":"x"}`)), 404, "not_found")
		wantError(t, do(t, app, "GET", api+"/v1/nothing", nil), 404, "not_found")
		wantError(t, do(t, app, "GET", api+"/", nil), 404, "not_found")
	})

	t.Run("egress_denied", func(t *testing.T) {
		n := len(e.Provider.APIRequests())
		for _, p := range []string{"%2e%2e/token", "a/%2e%2e/%2e%2e/token", "a%2F..%2Ftoken", "..%2f..%2ftoken", "%2F%2Fevil.example/x", "/evil.example/x"} {
			wantError(t, do(t, app, "GET", api+"/v1/integrations/crm/proxy/"+p, nil), 403, "egress_denied")
		}
		for _, p := range []string{"../token", "https://evil.example/x", "//evil.example/x", "a/../../token", "@evil.example"} {
			wantError(t, do(t, app, "POST", api+"/v1/integrations/crm/execute", []byte(fmt.Sprintf(`{"method":"GET","path":%q}`, p))), 403, "egress_denied")
		}
		if len(e.Provider.APIRequests()) != n {
			t.Fatal("a refused request reached upstream")
		}
	})

	t.Run("reauthorization_required", func(t *testing.T) {
		e.Provider.SetExpiresIn(10) // inside refresh_margin: the next use refreshes
		t.Cleanup(func() { e.Provider.SetExpiresIn(3600) })
		e.StoreToken(AppAcme, "stale")
		e.Provider.SetNextRefreshError("invalid_grant", http.StatusBadRequest)
		wantError(t, do(t, app, "GET", api+"/v1/integrations/stale/proxy/contacts", nil), 409, "reauthorization_required")
		md := jsonObject(t, do(t, app, "GET", api+"/v1/integrations/stale", nil).Body)
		if md["status"] != "reauthorization_required" {
			t.Fatalf("status after invalid_grant: %v", md)
		}
		wantError(t, do(t, app, "POST", api+"/v1/integrations/stale/execute", []byte(`{"method":"GET","path":"x"}`)), 409, "reauthorization_required")
		// Storing a fresh grant re-activates it.
		e.Provider.SetExpiresIn(3600)
		e.StoreToken(AppAcme, "stale")
		md = jsonObject(t, do(t, app, "GET", api+"/v1/integrations/stale", nil).Body)
		if md["status"] != "active" {
			t.Fatalf("status after re-store: %v", md)
		}
	})

	t.Run("degraded", func(t *testing.T) {
		e.Provider.SetExpiresIn(30) // valid, but inside the 60s margin
		t.Cleanup(func() { e.Provider.SetExpiresIn(3600) })
		e.StoreToken(AppAcme, "flaky")
		e.Provider.SetNextRefreshError("temporarily_unavailable", http.StatusServiceUnavailable)
		r := do(t, app, "GET", api+"/v1/integrations/flaky/proxy/contacts", nil)
		md := jsonObject(t, do(t, app, "GET", api+"/v1/integrations/flaky", nil).Body)
		if md["status"] != "degraded" || md["consecutive_failures"].(float64) < 1 || md["last_error"] == "" {
			t.Fatalf("status after a transient refresh failure: %v (call answered %d %s)", md, r.Status, r.Body)
		}
	})

	t.Run("delete", func(t *testing.T) {
		r := do(t, app, "DELETE", api+"/v1/integrations/crm", nil)
		wantStatus(t, r, http.StatusOK)
		m := jsonObject(t, r.Body)
		wantKeys(t, m, "revoked_at_provider")
		if m["revoked_at_provider"] != true {
			t.Fatalf("delete %s", r.Body)
		}
		if !e.Provider.IsRevoked(tok.RefreshToken) {
			t.Fatal("refresh token not revoked at the provider")
		}
		wantError(t, do(t, app, "GET", api+"/v1/integrations/crm", nil), 404, "not_found")
		wantError(t, do(t, app, "DELETE", api+"/v1/integrations/crm", nil), 404, "not_found")
		// No revocation_url: deleted, but not revoked at the provider.
		r = do(t, app, "DELETE", api+"/v1/integrations/blob", nil)
		wantStatus(t, r, http.StatusOK)
		if m := jsonObject(t, r.Body); m["revoked_at_provider"] != false {
			t.Fatalf("delete without revocation_url %s", r.Body)
		}
	})

	t.Run("method_not_allowed", func(t *testing.T) {
		r := do(t, app, "PATCH", api+"/v1/integrations/x", nil)
		if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") == "" {
			t.Fatalf("PATCH: %d %v", r.Status, r.Header)
		}
	})
}

// noTokenIn fails if any part of tok appears in b.
func noTokenIn(t *testing.T, b []byte, tok oauth.Token) {
	t.Helper()
	for _, s := range []string{tok.AccessToken.Reveal(), tok.RefreshToken.Reveal()} {
		if s != "" && bytes.Contains(b, []byte(s)) {
			t.Fatalf("a token appears in a response body")
		}
	}
}
