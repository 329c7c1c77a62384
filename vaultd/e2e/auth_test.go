package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/quic-go/quic-go/http3"

	vapi "github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/client"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

var requestIDField = regexp.MustCompile(`"request_id":"[^"]*"`)

// sameAsMissing fails unless a and b are the same answer apart from the
// request id: status, the headers a client could tell apart, and the body
// byte for byte.
func sameAsMissing(t *testing.T, what string, a, b apiResp) {
	t.Helper()
	ab := requestIDField.ReplaceAll(a.Body, []byte(`"request_id":""`))
	bb := requestIDField.ReplaceAll(b.Body, []byte(`"request_id":""`))
	if a.Status != b.Status || string(ab) != string(bb) {
		t.Fatalf("%s: foreign answers %d %s, missing answers %d %s", what, a.Status, a.Body, b.Status, b.Body)
	}
	for _, h := range []string{"Content-Type", "Content-Length", "X-Vaultd-Error", "Cache-Control", "Allow"} {
		if a.Header.Get(h) != b.Header.Get(h) {
			t.Fatalf("%s: header %s differs: %q vs %q", what, h, a.Header.Get(h), b.Header.Get(h))
		}
	}
}

func b64json(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestTLS pins the transport: TLS 1.3 only, a client certificate from
// client_ca required at the handshake, HTTP/2 over TCP, HTTP/3 over UDP on
// the same port answering the same, and Alt-Svc advertising it.
func TestTLS(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	api := e.API

	t.Run("tls12_refused", func(t *testing.T) {
		tc := e.TLSConfig(AppAcme)
		tc.MinVersion, tc.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		conn, err := tls.Dial("tcp", e.Addr(), tc)
		if err == nil {
			conn.Close()
			t.Fatal("TLS 1.2 handshake succeeded")
		}
	})
	refused := func(t *testing.T, tc *tls.Config) {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}, Timeout: 30 * time.Second}
		resp, err := c.Get(api + "/v1/tenants/acme")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("request answered %d", resp.StatusCode)
		}
	}
	t.Run("no_client_cert", func(t *testing.T) {
		tc := e.TLSConfig(AppAcme)
		tc.Certificates = nil
		refused(t, tc)
	})
	t.Run("rogue_ca", func(t *testing.T) { refused(t, e.TLSConfig(Rogue)) })

	var h2 apiResp
	t.Run("http2", func(t *testing.T) {
		c := e.HTTP(Operator)
		resp, err := c.Get(api + "/v1/tenants/acme")
		must(t, err)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
			t.Fatalf("proto %s tls %+v", resp.Proto, resp.TLS)
		}
		h2 = do(t, c, "GET", api+"/v1/tenants/acme", nil)
		wantStatus(t, h2, 200)
		port := e.UDPAddr().Port
		if as := h2.Header.Get("Alt-Svc"); !strings.Contains(as, fmt.Sprintf(`h3=":%d"`, port)) {
			t.Fatalf("Alt-Svc %q", as)
		}
	})

	t.Run("http3", func(t *testing.T) {
		tr := &http3.Transport{TLSClientConfig: e.TLSConfig(Operator)}
		defer tr.Close()
		c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		r := do(t, c, "GET", api+"/v1/tenants/acme", nil)
		if r.Proto != "HTTP/3.0" {
			t.Fatalf("proto %s", r.Proto)
		}
		wantStatus(t, r, 200)
		if string(r.Body) != string(h2.Body) {
			t.Fatalf("HTTP/3 %s, HTTP/2 %s", r.Body, h2.Body)
		}
		// The same gates apply over HTTP/3: an app call works, a role
		// violation is refused with the same error body.
		tr2 := &http3.Transport{TLSClientConfig: e.TLSConfig(AppAcme)}
		defer tr2.Close()
		c2 := &http.Client{Transport: tr2, Timeout: 30 * time.Second}
		tok := e.Provider.IssueInitialToken([]string{"contacts.read"})
		wantStatus(t, do(t, c2, "PUT", api+"/v1/integrations/h3", storeBody(ProviderName, oauthtest.TokenResponseJSON(tok))), 200)
		p := do(t, c2, "GET", api+"/v1/integrations/h3/proxy/contacts?q=1", nil)
		wantStatus(t, p, 200)
		noTokenIn(t, p.Body, tok)
		wantError(t, do(t, c2, "GET", api+"/v1/tenants/acme", nil), 403, "forbidden")

		for _, name := range []string{Rogue, ""} {
			tc := e.TLSConfig(AppAcme)
			if name == Rogue {
				tc = e.TLSConfig(Rogue)
			} else {
				tc.Certificates = nil
			}
			tr3 := &http3.Transport{TLSClientConfig: tc}
			c3 := &http.Client{Transport: tr3, Timeout: 30 * time.Second}
			resp, err := c3.Get(api + "/v1/tenants/acme")
			tr3.Close()
			if err == nil {
				resp.Body.Close()
				t.Fatalf("HTTP/3 without a valid client cert (%q) answered %d", name, resp.StatusCode)
			}
		}
	})
}

// TestAuthz covers principals, roles, tenancy and tenant-context JWTs
// through the API.
func TestAuthz(t *testing.T) {
	e := New(t, Options{})
	ctx := t.Context()
	api := e.API
	e.CreateTenant("acme")
	e.CreateTenant("globex")
	acmeTok := e.StoreToken(AppAcme, "crm")
	e.StoreToken(AppGlobex, "g1")
	app, glob, multi := e.HTTP(AppAcme), e.HTTP(AppGlobex), e.HTTP(AppMulti)
	tokStore := storeBody(ProviderName, oauthtest.TokenResponseJSON(e.Provider.IssueInitialToken([]string{"contacts.read"})))
	exec := []byte(`{"method":"GET","path":"contacts"}`)

	t.Run("forbidden", func(t *testing.T) {
		type req struct{ method, path string }
		appCalls := []req{{"GET", "/v1/integrations"}, {"GET", "/v1/integrations/crm"}, {"PUT", "/v1/integrations/crm"},
			{"DELETE", "/v1/integrations/crm"}, {"GET", "/v1/integrations/crm/proxy/contacts"}, {"POST", "/v1/integrations/crm/execute"}}
		opCalls := []req{{"POST", "/v1/tenants"}, {"GET", "/v1/tenants/acme"}, {"GET", "/v1/tenants"}, {"POST", "/v1/tenants/acme/rotate-dek"}, {"POST", "/v1/tenants/acme/rewrap"}, {"GET", "/v1/providers"}, {"GET", "/v1/admin/backup"}}
		auditCalls := []req{{"GET", "/v1/audit"}}
		body := func(r req) []byte {
			switch {
			case r.method == "PUT":
				return tokStore
			case strings.HasSuffix(r.path, "execute"):
				return exec
			case r.path == "/v1/tenants" && r.method == "POST":
				return []byte(`{"id":"newco"}`)
			}
			return nil
		}
		jwtAcme := e.JWT("acme", "u1", nil)
		for _, c := range []struct {
			who   string
			calls []req
			hdr   []string
		}{
			{Stranger, append(append(append([]req{}, appCalls...), opCalls...), auditCalls...), nil},
			{Operator, append(append([]req{}, appCalls...), auditCalls...), nil},
			{AppAcme, append(append([]req{}, opCalls...), auditCalls...), nil},
			{AppMulti, append(append([]req{}, opCalls...), auditCalls...), []string{"X-Tenant-Context", jwtAcme}},
			{Auditor, append(append([]req{}, appCalls...), opCalls...), nil},
			{AuditorAcme, append(append([]req{}, appCalls...), opCalls...), nil},
		} {
			hc := e.HTTP(c.who)
			for _, r := range c.calls {
				t.Run(c.who+" "+r.method+" "+r.path, func(t *testing.T) {
					wantError(t, do(t, hc, r.method, api+r.path, body(r), c.hdr...), 403, "forbidden")
				})
			}
		}
		// Nothing was created or changed by the refused calls.
		if _, err := e.Client(Operator).GetTenant(ctx, "newco"); !client.IsCode(err, vapi.CodeNotFound) {
			t.Fatalf("refused tenant create left a tenant: %v", err)
		}
		if _, err := e.Client(AppAcme).GetIntegration(ctx, "crm"); err != nil {
			t.Fatalf("refused delete removed the integration: %v", err)
		}
		if len(e.Provider.Revoked()) != 0 {
			t.Fatal("a refused call revoked a token")
		}
	})

	t.Run("fixed_tenant", func(t *testing.T) {
		// A fixed tenant wins over any assertion, query or body.
		l := do(t, app, "GET", api+"/v1/integrations?tenant_id=globex", nil, "X-Tenant-Context", e.JWT("globex", "", nil))
		wantStatus(t, l, 200)
		if !strings.Contains(string(l.Body), `"id":"crm"`) || strings.Contains(string(l.Body), "g1") || strings.Contains(string(l.Body), `"tenant_id":"globex"`) {
			t.Fatalf("acme's list: %s", l.Body)
		}
		wantError(t, do(t, app, "GET", api+"/v1/integrations/g1?tenant_id=globex", nil), 404, "not_found")
		wantError(t, do(t, app, "GET", api+"/v1/integrations/g1/proxy/contacts?tenant_id=globex", nil), 404, "not_found")
		// A tenant_id in the body is refused (unknown field), never used.
		withTenant := strings.Replace(string(tokStore), `{"provider"`, `{"tenant_id":"globex","provider"`, 1)
		r := do(t, app, "PUT", api+"/v1/integrations/sneaky", []byte(withTenant))
		if r.Status == 200 && !strings.Contains(string(r.Body), `"tenant_id":"acme"`) {
			t.Fatalf("body tenant_id selected a tenant: %s", r.Body)
		}
		gl := do(t, glob, "GET", api+"/v1/integrations", nil)
		if strings.Contains(string(gl.Body), "sneaky") || !strings.Contains(string(gl.Body), `"g1"`) {
			t.Fatalf("globex's list: %s", gl.Body)
		}
		// Operator: a tenant in the body of another route does not matter.
		wantStatus(t, do(t, e.HTTP(Operator), "GET", api+"/v1/tenants/acme?tenant_id=globex", nil), 200)
	})

	t.Run("jwt_tenant", func(t *testing.T) {
		l := do(t, multi, "GET", api+"/v1/integrations?tenant_id=acme", nil, "X-Tenant-Context", e.JWT("globex", "bob", nil))
		wantStatus(t, l, 200)
		if !strings.Contains(string(l.Body), `"g1"`) || strings.Contains(string(l.Body), `"crm"`) {
			t.Fatalf("JWT globex list: %s", l.Body)
		}
		l = do(t, multi, "GET", api+"/v1/integrations", nil, "X-Tenant-Context", e.JWT("acme", "bob", nil))
		if !strings.Contains(string(l.Body), `"crm"`) || strings.Contains(string(l.Body), `"g1"`) {
			t.Fatalf("JWT acme list: %s", l.Body)
		}
		// sub is recorded as on_behalf_of.
		wantStatus(t, do(t, multi, "PUT", api+"/v1/integrations/obo", tokStore, "X-Tenant-Context", e.JWT("acme", "user-42@example", nil)), 200)
		var sb strings.Builder
		must(t, e.Client(Auditor).Audit(ctx, client.AuditQuery{IntegrationID: "obo", Action: "token.store"}, &sb))
		var ev map[string]any
		must(t, json.Unmarshal([]byte(strings.TrimSpace(sb.String())), &ev))
		if ev["on_behalf_of"] != "user-42@example" || ev["actor"] != MultiURI || ev["tenant_id"] != "acme" || ev["outcome"] != "success" {
			t.Fatalf("audit event %v", ev)
		}
		// A fixed-tenant principal has no on_behalf_of.
		sb.Reset()
		must(t, e.Client(Auditor).Audit(ctx, client.AuditQuery{IntegrationID: "crm", Action: "token.store"}, &sb))
		if !strings.Contains(sb.String(), `"on_behalf_of":""`) || !strings.Contains(sb.String(), `"actor":"app-acme"`) {
			t.Fatalf("fixed-tenant audit %s", sb.String())
		}
	})

	t.Run("bad_jwt", func(t *testing.T) {
		now := time.Now()
		pubDER, err := x509.MarshalPKIXPublicKey(&e.JWTKey.PublicKey)
		must(t, err)
		pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
		claims := map[string]any{"iss": JWTIssuer, "aud": JWTAudience, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "tenant_id": "acme", "sub": "x"}
		payload := b64json(claims)
		none := b64json(map[string]any{"alg": "none", "typ": "JWT"}) + "." + payload + "."
		hs := func(key []byte) string {
			in := b64json(map[string]any{"alg": "HS256", "typ": "JWT", "kid": "e2e-1"}) + "." + payload
			m := hmac.New(sha256.New, key)
			m.Write([]byte(in))
			return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
		}
		jwkJSON, _ := json.Marshal(jose.JSONWebKey{Key: &e.JWTKey.PublicKey, KeyID: "e2e-1"})
		otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(t, err)
		sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: otherKey}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "e2e-1"))
		must(t, err)
		wrongKey, err := jwt.Signed(sig).Claims(claims).Serialize()
		must(t, err)
		good := e.JWT("acme", "x", nil)
		parts := strings.Split(good, ".")
		tampered := parts[0] + "." + b64json(map[string]any{"iss": JWTIssuer, "aud": JWTAudience, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "tenant_id": "globex"}) + "." + parts[2]

		cases := map[string]string{
			"missing":    "",
			"garbage":    "garbage",
			"three dots": "a.b.c",
			"expired": e.JWT("acme", "x", func(c map[string]any) {
				c["iat"] = now.Add(-6 * time.Minute).Unix()
				c["exp"] = now.Add(-3 * time.Minute).Unix()
			}),
			"wrong iss":         e.JWT("acme", "x", func(c map[string]any) { c["iss"] = "https://evil.example" }),
			"wrong aud":         e.JWT("acme", "x", func(c map[string]any) { c["aud"] = "someone-else" }),
			"lifetime too long": e.JWT("acme", "x", func(c map[string]any) { c["exp"] = now.Add(10 * time.Minute).Unix() }),
			"no exp":            e.JWT("acme", "x", func(c map[string]any) { delete(c, "exp") }),
			"no iat":            e.JWT("acme", "x", func(c map[string]any) { delete(c, "iat") }),
			"alg none":          none,
			"HS256 pem":         hs(pubPEM),
			"HS256 der":         hs(pubDER),
			"HS256 jwk":         hs(jwkJSON),
			"wrong key":         wrongKey,
			"tampered payload":  tampered,
			"no tenant claim":   e.JWT("acme", "x", func(c map[string]any) { delete(c, "tenant_id") }),
			"empty tenant":      e.JWT("", "x", nil),
			"tenant not string": e.JWT("acme", "x", func(c map[string]any) { c["tenant_id"] = 7 }),
			"bad tenant id":     e.JWT("../globex", "x", nil),
		}
		for name, tok := range cases {
			t.Run(name, func(t *testing.T) {
				var hdr []string
				if tok != "" {
					hdr = []string{"X-Tenant-Context", tok}
				}
				wantError(t, do(t, multi, "GET", api+"/v1/integrations", nil, hdr...), 401, "unauthenticated")
				wantError(t, do(t, multi, "GET", api+"/v1/integrations/crm/proxy/contacts", nil, hdr...), 401, "unauthenticated")
				wantError(t, do(t, multi, "PUT", api+"/v1/integrations/jwtfail", tokStore, hdr...), 401, "unauthenticated")
			})
		}
		// The refusals are audited as auth.denied, with no token content.
		var sb strings.Builder
		must(t, e.Client(Auditor).Audit(ctx, client.AuditQuery{Action: "auth.denied"}, &sb))
		if !strings.Contains(sb.String(), MultiURI) || strings.Contains(sb.String(), parts[2]) {
			t.Fatalf("auth.denied events: %s", sb.String())
		}
		if _, err := e.Client(AppAcme).GetIntegration(ctx, "jwtfail"); !client.IsCode(err, vapi.CodeNotFound) {
			t.Fatalf("a refused store landed: %v", err)
		}
	})

	t.Run("cross_tenant_like_missing", func(t *testing.T) {
		n := len(e.Provider.APIRequests())
		for _, who := range []struct {
			name string
			c    *http.Client
			hdr  []string
		}{{AppGlobex, glob, nil}, {AppMulti, multi, []string{"X-Tenant-Context", e.JWT("globex", "eve", nil)}}} {
			for _, c := range []struct {
				method, suffix string
				body           []byte
			}{
				{"GET", "", nil}, {"DELETE", "", nil}, {"GET", "/proxy/contacts/1", nil}, {"POST", "/proxy/contacts", []byte(`{}`)},
				{"POST", "/execute", exec},
			} {
				foreign := do(t, who.c, c.method, api+"/v1/integrations/crm"+c.suffix, c.body, who.hdr...)
				missing := do(t, who.c, c.method, api+"/v1/integrations/nosuch"+c.suffix, c.body, who.hdr...)
				wantError(t, foreign, 404, "not_found")
				sameAsMissing(t, who.name+" "+c.method+" crm"+c.suffix, foreign, missing)
				// And the same as acme asking for its own missing id.
				own := do(t, app, c.method, api+"/v1/integrations/nosuch"+c.suffix, c.body)
				sameAsMissing(t, "acme "+c.method+" nosuch"+c.suffix, foreign, own)
			}
		}
		// A tenant that does not exist at all answers the same too.
		e2 := do(t, multi, "GET", api+"/v1/integrations/crm", nil, "X-Tenant-Context", e.JWT("initech", "", nil))
		sameAsMissing(t, "unprovisioned tenant", e2, do(t, glob, "GET", api+"/v1/integrations/nosuch", nil))
		if len(e.Provider.APIRequests()) != n {
			t.Fatal("a cross-tenant call reached upstream")
		}
		if e.Provider.IsRevoked(acmeTok.RefreshToken) || e.Provider.IsRevoked(acmeTok.AccessToken) {
			t.Fatal("a cross-tenant delete revoked acme's token")
		}
		md, err := e.Client(AppAcme).GetIntegration(ctx, "crm")
		if err != nil || md.Status != "active" {
			t.Fatalf("acme's integration after cross-tenant calls: %+v %v", md, err)
		}
	})

	t.Run("uri_san_before_cn", func(t *testing.T) {
		// Principal = first URI SAN, else CN: a cert whose CN is the
		// operator's but which carries an unknown URI SAN is not the operator.
		l, err := e.CA.Client("ops-admin", "spiffe://vaultd.test/not-configured")
		must(t, err)
		_, _, err = l.WriteFiles(e.PKIDir, "cn-shadow")
		must(t, err)
		wantError(t, do(t, e.HTTP("cn-shadow"), "GET", api+"/v1/tenants/acme", nil), 403, "forbidden")
		wantStatus(t, do(t, e.HTTP(Operator), "GET", api+"/v1/tenants/acme", nil), 200)
	})

	t.Run("unknown_principal_audited", func(t *testing.T) {
		var sb strings.Builder
		must(t, e.Client(Auditor).Audit(ctx, client.AuditQuery{Action: "auth.denied"}, &sb))
		if !strings.Contains(sb.String(), `"actor":"stranger"`) || !strings.Contains(sb.String(), `"outcome":"denied"`) {
			t.Fatalf("auth.denied for stranger missing: %s", sb.String())
		}
	})
}

// TestGateOrder pins the order of the gates (docs/api.md, "Gates"): the
// route is matched on the path's shape before the principal is looked up,
// so 404 and 405 reach any certificate from client_ca and are not audited;
// no id is looked up before the caller is known and allowed, so a
// stranger or a caller without the role gets 403 (audited) whether the
// tenant or integration exists or not.
func TestGateOrder(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	e.StoreToken(AppAcme, "crm")
	api := e.API
	before := auditCount(t, e, func(ev map[string]any) bool { return ev["action"] == "auth.denied" })
	stranger, multi, app := e.HTTP(Stranger), e.HTTP(AppMulti), e.HTTP(AppAcme)
	wantError(t, do(t, stranger, "GET", api+"/v1/nosuch", nil), 404, "not_found")
	r := do(t, stranger, "DELETE", api+"/v1/tenants", nil)
	wantError(t, r, 405, "method_not_allowed")
	if r.Header.Get("Allow") != "GET, POST" {
		t.Fatalf("Allow %q", r.Header.Get("Allow"))
	}
	wantError(t, do(t, multi, "GET", api+"/v1/integrations/crm/nosuch", nil), 404, "not_found")
	if n := auditCount(t, e, func(ev map[string]any) bool { return ev["action"] == "auth.denied" }); n != before {
		t.Fatalf("404/405 audited as auth.denied: %d events, want %d", n, before)
	}
	// Past the route: no id is looked up before the caller is allowed.
	for _, p := range []string{"/v1/tenants/acme", "/v1/tenants/nosuch"} {
		wantError(t, do(t, stranger, "GET", api+p, nil), 403, "forbidden")
		wantError(t, do(t, app, "GET", api+p, nil), 403, "forbidden")
	}
	for _, p := range []string{"/v1/integrations/crm", "/v1/integrations/nosuch"} {
		wantError(t, do(t, stranger, "GET", api+p, nil), 403, "forbidden")
		wantError(t, do(t, multi, "GET", api+p, nil), 401, "unauthenticated")
	}
	if n := auditCount(t, e, func(ev map[string]any) bool { return ev["action"] == "auth.denied" }); n != before+8 {
		t.Fatalf("auth.denied events: %d, want %d", n, before+8)
	}
}
