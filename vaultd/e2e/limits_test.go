package e2e

import (
	"bufio"
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
	"strconv"
	"strings"
	"sync"
	"testing"
)

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
