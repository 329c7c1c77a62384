package e2e

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vaultd/vaultd/internal/devpki"
)

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
