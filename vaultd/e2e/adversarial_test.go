package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/vaultd/vaultd/internal/devpki"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// Regression tests for an adversarial review of the core promises: every
// token use audited whatever the caller does, a refresh that survives its
// caller, one trust store per provider, throttled forced refreshes, bounded
// memory and token sizes, vaultd's own X-Request-Id, and TRACE/CONNECT
// refused. Each failed on the code before its fix.

// auditCount counts the audit events (all tenants) that match.
func auditCount(t *testing.T, e *Env, match func(ev map[string]any) bool) int {
	t.Helper()
	n := 0
	for _, ev := range obAudit(t, e) {
		if match(ev) {
			n++
		}
	}
	return n
}

func evIs(integration, action, outcome string) func(map[string]any) bool {
	return func(ev map[string]any) bool {
		return ev["integration_id"] == integration && ev["action"] == action && (outcome == "" || ev["outcome"] == outcome)
	}
}

// hangUp sends req with a context it cancels as soon as entered fires
// (the provider is holding the call); it returns once the client call has
// ended.
func hangUp(t *testing.T, hc *http.Client, req *http.Request, entered <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		resp, err := hc.Do(req.WithContext(ctx))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case <-entered:
	case err := <-done:
		t.Fatalf("the call ended before the provider held it: %v", err)
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the cancelled call got an answer")
	}
}

func TestCallerHangUp(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	hc := e.HTTP(AppAcme)

	// The upstream got the call (and the bearer token) and the caller gave
	// up before the answer: the proxy.request event is still written.
	t.Run("proxy", func(t *testing.T) {
		e.Provider.SetExpiresIn(longLived)
		e.StoreToken(AppAcme, "hang-proxy")
		entered, release := e.Provider.Hold(oauthtest.HoldAPI)
		defer release()
		req, err := http.NewRequest(http.MethodPost, e.API+"/v1/integrations/hang-proxy/proxy/contacts", strings.NewReader(`{"a":1}`))
		must(t, err)
		hangUp(t, hc, req, entered)
		waitFor(t, func() bool { return auditCount(t, e, evIs("hang-proxy", "proxy.request", "")) == 1 })
	})
	t.Run("execute", func(t *testing.T) {
		e.StoreToken(AppAcme, "hang-exec")
		entered, release := e.Provider.Hold(oauthtest.HoldAPI)
		defer release()
		body, _ := json.Marshal(map[string]any{"method": "POST", "path": "contacts", "body": "x"})
		req, err := http.NewRequest(http.MethodPost, e.API+"/v1/integrations/hang-exec/execute", bytes.NewReader(body))
		must(t, err)
		hangUp(t, hc, req, entered)
		waitFor(t, func() bool { return auditCount(t, e, evIs("hang-exec", "proxy.request", "")) == 1 })
	})
	// The refresh token reached /revoke and the caller gave up: the
	// disconnect still ends with the revocations and the delete on record,
	// and the record gone.
	t.Run("disconnect", func(t *testing.T) {
		e.StoreToken(AppAcme, "hang-del")
		entered, release := e.Provider.Hold(oauthtest.HoldRevoke)
		req, err := http.NewRequest(http.MethodDelete, e.API+"/v1/integrations/hang-del", nil)
		must(t, err)
		hangUp(t, hc, req, entered)
		release()
		waitFor(t, func() bool {
			return auditCount(t, e, evIs("hang-del", "integration.delete", "success")) == 1
		})
		if n := auditCount(t, e, evIs("hang-del", "token.revoke", "")); n != 2 {
			t.Fatalf("token.revoke events: %d, want 2", n)
		}
		r := obDo(t, hc, http.MethodGet, e.API+"/v1/integrations/hang-del", nil, nil)
		wantError(t, apiResp{Status: r.Status, Header: r.Header, Body: r.Body}, http.StatusNotFound, "not_found")
	})
	// The provider rotates the refresh token and answers slowly; the caller
	// gives up. The refresh still commits: the integration stays active and
	// the next call works with no second refresh (it went degraded, then
	// reauthorization_required on invalid_grant).
	t.Run("refresh", func(t *testing.T) {
		e.Provider.SetRotation(true)
		refreshStore(t, e, "hang-refresh", 5) // inside the 60s margin
		before := e.Provider.RefreshCount()
		entered, release := e.Provider.Hold(oauthtest.HoldToken)
		req, err := http.NewRequest(http.MethodGet, e.API+"/v1/integrations/hang-refresh/proxy/contacts", nil)
		must(t, err)
		hangUp(t, hc, req, entered)
		release()
		waitFor(t, func() bool { return refreshMD(t, e, "hang-refresh").RefreshCount == 1 })
		if md := refreshMD(t, e, "hang-refresh"); md.Status != "active" {
			t.Fatalf("status after the hang-up: %q (%s)", md.Status, md.LastError)
		}
		r := obProxy(t, e, hc, "hang-refresh", http.MethodGet, "contacts", nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("next call: %d %s", r.Status, r.Body)
		}
		if got := e.Provider.RefreshCount() - before; got != 1 {
			t.Fatalf("token_url calls: %d, want 1", got)
		}
	})
}

// Ten upstream 401s made ten token_url calls. Now an integration gets at
// most one forced refresh per access token and per minute; the rest of the
// 401s are passed on as they came.
func TestForcedRefreshThrottledE2E(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	hc := e.HTTP(AppAcme)
	e.Provider.SetExpiresIn(longLived)
	e.StoreToken(AppAcme, "crm")
	before := e.Provider.RefreshCount()
	for i := 0; i < 10; i++ {
		r := obProxy(t, e, hc, "crm", http.MethodGet, "status/401", nil, nil)
		if r.Status != http.StatusUnauthorized || r.Header.Get("X-Vaultd-Error") != "" {
			t.Fatalf("401 #%d: %d %s", i, r.Status, r.Body)
		}
	}
	if got := e.Provider.RefreshCount() - before; got != 1 {
		t.Fatalf("token_url calls for ten 401s: %d, want 1", got)
	}
	if v := obMetric(t, e, "vaultd_forced_refresh_throttled_total"); v != 9 {
		t.Fatalf("throttled metric: %v, want 9", v)
	}
	// The token still works where the API accepts it.
	if r := obProxy(t, e, hc, "crm", http.MethodGet, "contacts", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("ordinary call: %d", r.Status)
	}
}

// mitm answers for whatever host points at it, with a certificate from
// one private CA, and records what it receives.
type mitm struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []string // "METHOD path auth=... body=..."
}

func newMITM(t *testing.T, ca *devpki.CA) *mitm {
	m := &mitm{}
	leaf, err := ca.Server("127.0.0.1")
	must(t, err)
	cert, err := leaf.TLSCertificate()
	must(t, err)
	m.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		m.mu.Lock()
		m.got = append(m.got, fmt.Sprintf("%s %s auth=%s body=%s", r.Method, r.URL.Path, r.Header.Get("Authorization"), b))
		m.mu.Unlock()
		if r.URL.Path == "/token" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"access_token":"mitm-at","token_type":"Bearer","expires_in":3600}`)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	m.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	m.srv.StartTLS()
	t.Cleanup(m.srv.Close)
	return m
}

func (m *mitm) seen() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.got...)
}

// One provider's ca_file was trusted for every provider: a server with a
// certificate from provider A's private CA received provider B's bearer
// token, refresh token and client secret.
func TestProviderTrustIsolated(t *testing.T) {
	caA, err := devpki.NewCA("provider A private CA")
	must(t, err)
	caB, err := devpki.NewCA("provider B private CA")
	must(t, err)
	m := newMITM(t, caA)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, data, 0o600))
		return p
	}
	caAFile, caBFile := write("a-ca.pem", caA.CertPEM), write("b-ca.pem", caB.CertPEM)
	secA, secB := write("a-secret", []byte("alpha-client-secret\n")), write("b-secret", []byte("beta-client-secret-XYZ\n"))
	provider := func(name, secretFile, caFile string) string {
		return fmt.Sprintf(`
[providers.%s]
token_url          = %q
revocation_url     = %q
api_base_url       = %q
client_id          = %q
client_secret_file = %q
auth_style         = "body"
scopes             = ["read"]
refresh_margin     = "60s"
ca_file            = %q
`, name, m.srv.URL+"/token", m.srv.URL+"/revoke", m.srv.URL+"/api", name+"-client", secretFile, caFile)
	}
	e := New(t, Options{ExtraConfig: provider("alpha", secA, caAFile) + provider("beta", secB, caBFile)})
	e.CreateTenant("acme")
	hc := e.HTTP(AppAcme)
	store := func(id, provider, tokJSON string) {
		r := obDo(t, hc, http.MethodPut, e.API+"/v1/integrations/"+id, nil, bytes.NewReader(storeBody(provider, []byte(tokJSON))))
		if r.Status != http.StatusOK {
			t.Fatalf("store %s: %d %s", id, r.Status, r.Body)
		}
	}
	// Alpha's own CA vouches for the server: alpha's calls go through.
	store("a", "alpha", `{"access_token":"alpha-at","refresh_token":"alpha-rt","expires_in":86400}`)
	if r := obProxy(t, e, hc, "a", http.MethodGet, "x", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("alpha through its own CA: %d %s", r.Status, r.Body)
	}
	// Beta trusts only its CA: the call, a due refresh and a disconnect
	// never reach the server alpha's CA vouches for.
	store("b", "beta", `{"access_token":"beta-at","refresh_token":"beta-rt","expires_in":86400}`)
	if r := obProxy(t, e, hc, "b", http.MethodGet, "x", nil, nil); r.Status != http.StatusBadGateway || r.Code() != "upstream_unreachable" {
		t.Fatalf("beta through alpha's CA: %d %s", r.Status, r.Body)
	}
	store("b2", "beta", `{"access_token":"beta-at2","refresh_token":"beta-rt2","expires_in":5}`)
	r := obProxy(t, e, hc, "b2", http.MethodGet, "x", nil, nil)
	if r.Status != http.StatusBadGateway && r.Status != http.StatusServiceUnavailable {
		t.Fatalf("beta refresh through alpha's CA: %d %s", r.Status, r.Body)
	}
	if md := refreshMD(t, e, "b2"); md.Status != "degraded" || md.RefreshCount != 0 {
		t.Fatalf("beta after a refresh through alpha's CA: %+v", md)
	}
	_ = obDo(t, hc, http.MethodDelete, e.API+"/v1/integrations/b", nil, nil)
	for _, s := range m.seen() {
		if strings.Contains(s, "beta") {
			t.Fatalf("the server with alpha's CA received beta's credentials: %q", s)
		}
	}
}

// hostile is a provider API that answers its own X-Request-Id and, at
// /ctl, nearly max_body_bytes of control bytes.
func newHostile(t *testing.T, ctlSize int) (srv *httptest.Server, config string) {
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "upstream-request-id")
		if r.URL.Path == "/api/ctl" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write(bytes.Repeat([]byte{0x01}, ctlSize))
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "hostile-ca.pem")
	must(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644))
	sec := filepath.Join(dir, "hostile-secret")
	must(t, os.WriteFile(sec, []byte("hostile-secret\n"), 0o600))
	return srv, fmt.Sprintf(`
[providers.hostile]
token_url          = %q
api_base_url       = %q
client_id          = "hostile"
client_secret_file = %q
scopes             = ["read"]
ca_file            = %q
`, srv.URL+"/token", srv.URL+"/api", sec, ca)
}

// vmHWM is a process's peak resident set (VmHWM) in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			must(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// Six 10 MB execute answers of control bytes took vaultd's RSS to 1.26 GB
// (each was escaped as "\u0001" in one buffer). Now such a body travels as
// body_base64, encoding streams, and all buffered answers share a budget:
// peak RSS stays far below that, and every answer is either whole or a
// clear 503.
func TestExecuteMemoryBounded(t *testing.T) {
	const size = 10<<20 - 1 // just under the default max_body_bytes
	_, cfg := newHostile(t, size)
	e := New(t, Options{ExtraConfig: cfg})
	e.CreateTenant("acme")
	hc := e.HTTP(AppAcme)
	r := obDo(t, hc, http.MethodPut, e.API+"/v1/integrations/h", nil,
		bytes.NewReader(storeBody("hostile", []byte(`{"access_token":"hostile-at","expires_in":86400}`))))
	if r.Status != http.StatusOK {
		t.Fatalf("store: %d %s", r.Status, r.Body)
	}
	var wg sync.WaitGroup
	results := make([]obResult, 6)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = obExecute(t, e, hc, "h", map[string]any{"method": "GET", "path": "ctl"})
		}()
	}
	wg.Wait()
	ok := 0
	for i, r := range results {
		switch {
		case r.Status == http.StatusOK:
			var out struct {
				Status     int     `json:"status"`
				Body       *string `json:"body"`
				BodyBase64 string  `json:"body_base64"`
			}
			must(t, json.Unmarshal(r.Body, &out))
			b, err := base64.StdEncoding.DecodeString(out.BodyBase64)
			if out.Body != nil || err != nil || len(b) != size || b[0] != 0x01 {
				t.Fatalf("answer %d: body field present %t, %d bytes, %v", i, out.Body != nil, len(b), err)
			}
			ok++
		case r.Status == http.StatusServiceUnavailable && r.Code() == "integration_unavailable":
		default:
			t.Fatalf("answer %d: %d %.200s", i, r.Status, r.Body)
		}
	}
	if ok == 0 {
		t.Fatal("no execute answer was served")
	}
	if hwm := vmHWM(t, e.Pid()); hwm > 400<<20 {
		t.Fatalf("vaultd peak RSS %d MiB for six 10 MiB answers", hwm>>20)
	}
	t.Logf("%d of 6 served; vaultd peak RSS %d MiB", ok, vmHWM(t, e.Pid())>>20)
}

// A 9 MB access token was accepted. Tokens over 64 KiB are refused with
// 400 bad_request, and nothing is stored.
func TestTokenSizeCap(t *testing.T) {
	e := New(t, Options{MaxBodyBytes: 1 << 20})
	e.CreateTenant("acme")
	hc := e.HTTP(AppAcme)
	big := strings.Repeat("A", 64<<10+1)
	for _, tok := range []string{
		`{"access_token":"` + big + `","expires_in":3600}`,
		`{"access_token":"small","refresh_token":"` + big + `","expires_in":3600}`,
	} {
		r := obDo(t, hc, http.MethodPut, e.API+"/v1/integrations/big", nil, bytes.NewReader(storeBody(ProviderName, []byte(tok))))
		wantError(t, apiResp{Status: r.Status, Header: r.Header, Body: r.Body}, http.StatusBadRequest, "bad_request")
	}
	r := obDo(t, hc, http.MethodGet, e.API+"/v1/integrations/big", nil, nil)
	if r.Status != http.StatusNotFound {
		t.Fatalf("refused token was stored: %d", r.Status)
	}
}

// The upstream's X-Request-Id replaced vaultd's on the proxy route. The
// answer carries one X-Request-Id, vaultd's, equal to the audit event's;
// the upstream's travels as X-Upstream-Request-Id.
func TestProxyKeepsVaultdRequestID(t *testing.T) {
	_, cfg := newHostile(t, 1)
	e := New(t, Options{ExtraConfig: cfg})
	e.CreateTenant("acme")
	hc := e.HTTP(AppAcme)
	r := obDo(t, hc, http.MethodPut, e.API+"/v1/integrations/h", nil,
		bytes.NewReader(storeBody("hostile", []byte(`{"access_token":"hostile-at","expires_in":86400}`))))
	if r.Status != http.StatusOK {
		t.Fatalf("store: %d %s", r.Status, r.Body)
	}
	r = obProxy(t, e, hc, "h", http.MethodGet, "x", nil, nil)
	ids := r.Header.Values("X-Request-Id")
	if r.Status != http.StatusOK || len(ids) != 1 || ids[0] == "upstream-request-id" {
		t.Fatalf("proxy answer %d, X-Request-Id %q", r.Status, ids)
	}
	if got := r.Header.Get("X-Upstream-Request-Id"); got != "upstream-request-id" {
		t.Fatalf("X-Upstream-Request-Id %q", got)
	}
	if n := auditCount(t, e, func(ev map[string]any) bool {
		return ev["action"] == "proxy.request" && ev["request_id"] == ids[0]
	}); n != 1 {
		t.Fatalf("audit events with the answer's request id: %d", n)
	}
}

// TRACE and CONNECT through the proxy answered 503 and logged at ERROR.
// They are refused with 405 method_not_allowed before any token is used.
func TestProxyRefusesTraceAndConnect(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	e.Provider.SetExpiresIn(longLived)
	e.StoreToken(AppAcme, "crm")
	before := len(e.Provider.APIRequests())
	for _, hc := range []*http.Client{e.HTTP(AppAcme), obHTTP1(e, AppAcme)} {
		for _, m := range []string{"TRACE", "trace", "CONNECT"} {
			r := obProxy(t, e, hc, "crm", m, "contacts", nil, nil)
			if m == "CONNECT" && r.Status == http.StatusNotFound && r.Code() == "not_found" {
				continue // HTTP/2 CONNECT carries no path: it names no route at all
			}
			if r.Status != http.StatusMethodNotAllowed || r.Code() != "method_not_allowed" {
				t.Fatalf("%s: %d %s", m, r.Status, r.Body)
			}
		}
	}
	if n := len(e.Provider.APIRequests()) - before; n != 0 {
		t.Fatalf("%d calls reached the upstream", n)
	}
	if strings.Contains(e.Logs(), `"level":"ERROR"`) {
		t.Fatalf("refused methods logged at ERROR:\n%s", e.Logs())
	}
}
