package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/vaultd/vaultd/vaultd/api"
)

// hookReceiver is a webhook endpoint on 127.0.0.1 in the test process,
// as a customer's receiver (or a local relay) would be.
type hookReceiver struct {
	srv *httptest.Server

	mu      sync.Mutex
	got     []hookRequest
	status  int           // answer (200 if 0)
	hold    chan struct{} // when set, requests wait until it is closed
	arrived chan struct{}
}

type hookRequest struct {
	header http.Header
	body   []byte
}

type hookBody struct {
	Type      string            `json:"type"`
	Timestamp string            `json:"timestamp"`
	Data      map[string]string `json:"data"`
}

func newHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	r := &hookReceiver{arrived: make(chan struct{}, 256)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		r.mu.Lock()
		r.got = append(r.got, hookRequest{header: req.Header.Clone(), body: body})
		status, hold := r.status, r.hold
		r.mu.Unlock()
		select {
		case r.arrived <- struct{}{}:
		default:
		}
		if hold != nil {
			select {
			case <-hold:
			case <-req.Context().Done():
				return
			}
		}
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) set(status int, hold chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status, r.hold = status, hold
}

func (r *hookReceiver) requests() []hookRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hookRequest(nil), r.got...)
}

// hookWait polls until cond holds (bounded; the bound fails the test).
func hookWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// find returns the requests whose body has that type and integration.
func (r *hookReceiver) find(t *testing.T, typ, integration string) []hookRequest {
	var out []hookRequest
	for _, req := range r.requests() {
		var b hookBody
		if err := json.Unmarshal(req.body, &b); err != nil {
			t.Fatalf("body is not JSON: %v", err)
		}
		if b.Type == typ && b.Data["integration_id"] == integration {
			out = append(out, req)
		}
	}
	return out
}

// webhookSecret writes a whsec_ secret file and returns its path and value.
func webhookSecret(t *testing.T, dir, name string) (path, whsec string) {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	whsec = "whsec_" + base64.StdEncoding.EncodeToString(k)
	path = filepath.Join(dir, name)
	must(t, os.WriteFile(path, []byte(whsec+"\n"), 0o600))
	return path, whsec
}

func webhookConfig(url, secretFile, extra string) string {
	return fmt.Sprintf("\n[[webhooks]]\nurl = %q\nsecret_file = %q\nretry_schedule = [\"1s\", \"1s\"]\n%s\n", url, secretFile, extra)
}

// Notifications of the real binary: signed as Standard Webhooks (checked
// with the reference library), with the documented body, filtered per
// webhook, never carrying a token or a secret.
func TestWebhooksDeliverSigned(t *testing.T) {
	all, globexOnly, tenantsOnly := newHookReceiver(t), newHookReceiver(t), newHookReceiver(t)
	dir := t.TempDir()
	s1, whsec := webhookSecret(t, dir, "hook1")
	s2, _ := webhookSecret(t, dir, "hook2")
	s3, _ := webhookSecret(t, dir, "hook3")
	e := New(t, Options{ExtraConfig: webhookConfig(all.srv.URL+"/hooks?source=vaultd", s1, `events = ["integration.*"]`) +
		webhookConfig(globexOnly.srv.URL, s2, `tenants = ["globex"]`) +
		webhookConfig(tenantsOnly.srv.URL, s3, `events = ["tenant.*"]`)})
	e.CreateTenant("acme")
	tok := e.StoreToken(AppAcme, "crm")
	hookWait(t, "integration.connected", func() bool { return len(all.find(t, "integration.connected", "crm")) > 0 })
	if _, err := e.Client(AppAcme).DeleteIntegration(context.Background(), "crm"); err != nil {
		t.Fatal(err)
	}
	hookWait(t, "integration.disconnected", func() bool { return len(all.find(t, "integration.disconnected", "crm")) > 0 })

	wh, err := standardwebhooks.NewWebhook(whsec)
	if err != nil {
		t.Fatal(err)
	}
	connected := all.find(t, "integration.connected", "crm")[0]
	if err := wh.Verify(connected.body, connected.header); err != nil {
		t.Fatalf("reference library refuses the signature: %v", err)
	}
	if ct := connected.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content-type %q", ct)
	}
	var b hookBody
	must(t, json.Unmarshal(connected.body, &b))
	if _, err := time.Parse(time.RFC3339, b.Timestamp); err != nil {
		t.Errorf("timestamp %q: %v", b.Timestamp, err)
	}
	want := map[string]string{"tenant_id": "acme", "integration_id": "crm", "provider": ProviderName, "status": "active", "reason": "token stored"}
	if fmt.Sprint(b.Data) != fmt.Sprint(want) {
		t.Errorf("data %v, want %v", b.Data, want)
	}
	// The filters: acme's integration events reach neither the globex-only
	// webhook nor the tenant-events-only one.
	if n := len(globexOnly.requests()) + len(tenantsOnly.requests()); n != 0 {
		t.Errorf("filtered webhooks got %d requests", n)
	}
	secrets := []string{tok.AccessToken.Reveal(), tok.RefreshToken.Reveal(), e.Provider.ClientSecret().Reveal(), whsec, strings.TrimPrefix(whsec, "whsec_")}
	for _, r := range all.requests() {
		for _, s := range secrets {
			if s != "" && (strings.Contains(string(r.body), s) || strings.Contains(fmt.Sprint(r.header), s)) {
				t.Fatalf("a notification carries a secret: %s", r.body)
			}
		}
	}
	// The operator's list: delivered, no body, no URL, no secret.
	raw := adminGet(t, e, "/v1/admin/webhooks/deliveries?status=delivered")
	for _, s := range append(secrets, "source=vaultd", all.srv.URL) {
		if strings.Contains(raw, s) {
			t.Fatalf("deliveries list carries %q: %s", s, raw)
		}
	}
	var list api.WebhookDeliveryList
	must(t, json.Unmarshal([]byte(raw), &list))
	if len(list.Deliveries) != 2 || list.Deliveries[0].Status != "delivered" || list.Deliveries[0].Attempts != 1 {
		t.Errorf("deliveries %+v", list.Deliveries)
	}
	// Apps may not see them.
	resp, err := e.HTTP(AppAcme).Get(e.API + "/v1/admin/webhooks/deliveries")
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("app got %d", resp.StatusCode)
	}
}

func adminGet(t *testing.T, e *Env, path string) string {
	t.Helper()
	resp, err := e.HTTP(Operator).Get(e.API + path)
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return string(body)
}

// A receiver that keeps failing: retried on the schedule with the same
// webhook-id, dead-lettered after the last retry (listed, audited), and
// sent again by the operator's redelivery.
func TestWebhookDeadLetterRedeliver(t *testing.T) {
	rcv := newHookReceiver(t)
	rcv.set(http.StatusInternalServerError, nil)
	s1, whsec := webhookSecret(t, t.TempDir(), "hook")
	e := New(t, Options{ExtraConfig: webhookConfig(rcv.srv.URL, s1, "")})
	e.CreateTenant("acme")
	e.StoreToken(AppAcme, "crm")
	var failed api.WebhookDeliveryList
	hookWait(t, "a dead letter", func() bool {
		must(t, json.Unmarshal([]byte(adminGet(t, e, "/v1/admin/webhooks/deliveries?status=failed")), &failed))
		return len(failed.Deliveries) == 1
	})
	d := failed.Deliveries[0]
	if d.Attempts != 3 || d.LastError != "http_500" || d.Type != "integration.connected" || d.TenantID != "acme" || !strings.HasPrefix(d.ID, "msg_") {
		t.Fatalf("dead letter %+v", d)
	}
	if n := len(rcv.find(t, "integration.connected", "crm")); n != 3 {
		t.Fatalf("%d attempts reached the receiver, want 3", n)
	}
	rcv.set(http.StatusNoContent, nil)
	resp, err := e.HTTP(Operator).Post(e.API+"/v1/admin/webhooks/deliveries/"+d.ID+"/redeliver", "application/json", nil)
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("redeliver: %d %s", resp.StatusCode, body)
	}
	var red api.WebhookDelivery
	must(t, json.Unmarshal(body, &red))
	if red.ID != d.ID || red.Status != "pending" || red.Attempts != 0 {
		t.Fatalf("redelivered %+v", red)
	}
	hookWait(t, "the redelivery", func() bool { return len(rcv.find(t, "integration.connected", "crm")) == 4 })
	wh, err := standardwebhooks.NewWebhook(whsec)
	must(t, err)
	for i, r := range rcv.find(t, "integration.connected", "crm") {
		if r.header.Get("webhook-id") != d.ID {
			t.Errorf("attempt %d: webhook-id %q, want %q", i, r.header.Get("webhook-id"), d.ID)
		}
		if err := wh.Verify(r.body, r.header); err != nil {
			t.Errorf("attempt %d: %v", i, err)
		}
	}
	hookWait(t, "delivered", func() bool {
		return strings.Contains(adminGet(t, e, "/v1/admin/webhooks/deliveries?status=delivered"), d.ID)
	})
	resp, err = e.HTTP(Operator).Post(e.API+"/v1/admin/webhooks/deliveries/msg_nosuch/redeliver", "application/json", nil)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown delivery: %d", resp.StatusCode)
	}
	// Both on the audit trail, with no URL.
	trail, err := os.ReadFile(e.AuditPath)
	must(t, err)
	var dead, redo int
	for _, line := range strings.Split(string(trail), "\n") {
		switch {
		case strings.Contains(line, `"action":"webhook.dead_letter"`):
			dead++
			if !strings.Contains(line, "delivery="+d.ID) || !strings.Contains(line, "last_error=http_500") || strings.Contains(line, "127.0.0.1") {
				t.Errorf("dead-letter event %s", line)
			}
		case strings.Contains(line, `"action":"webhook.redeliver"`):
			redo++
			if !strings.Contains(line, `"actor":"ops-admin"`) || !strings.Contains(line, `"outcome":"success"`) {
				t.Errorf("redeliver event %s", line)
			}
		}
	}
	if dead != 1 || redo != 1 {
		t.Errorf("%d dead-letter and %d redeliver events", dead, redo)
	}
	_, ops := e.OpsGet("/metrics")
	for _, m := range []string{`vaultd_webhook_deliveries_total{outcome="dead_letter"} 1`, `vaultd_webhook_deliveries_total{outcome="retry"} 2`,
		`vaultd_webhook_dead_letters_total 1`, `vaultd_webhook_pending 0`} {
		if !strings.Contains(ops, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
}

// A receiver that hangs holds none of the API: calls complete while it
// still has vaultd's request open.
func TestWebhookHangingReceiverDoesNotBlockAPI(t *testing.T) {
	rcv := newHookReceiver(t)
	hold := make(chan struct{})
	rcv.set(0, hold)
	released := false
	t.Cleanup(func() {
		if !released {
			close(hold)
		}
	})
	s1, _ := webhookSecret(t, t.TempDir(), "hook")
	e := New(t, Options{ExtraConfig: webhookConfig(rcv.srv.URL, s1, "")})
	e.CreateTenant("acme")
	e.StoreToken(AppAcme, "crm")
	select {
	case <-rcv.arrived:
	case <-time.After(60 * time.Second):
		t.Fatal("no delivery arrived")
	}
	// The receiver holds that request open. Every call below completes
	// while it does (each would fail the test by its client timeout if it
	// waited on the delivery).
	for i := range 5 {
		e.StoreToken(AppAcme, fmt.Sprintf("crm%d", i))
	}
	if _, err := e.Client(AppAcme).ListIntegrations(context.Background()); err != nil {
		t.Fatal(err)
	}
	adminGet(t, e, "/v1/admin/webhooks/deliveries")
	select {
	case <-hold:
		t.Fatal("the receiver was released early")
	default:
	}
	if n := len(rcv.requests()); n == 0 || n > 2 {
		t.Errorf("the hanging receiver has %d requests open, want 1 or 2 (per-webhook bound)", n)
	}
	released = true
	close(hold)
	hookWait(t, "the backlog", func() bool { return len(rcv.find(t, "integration.connected", "crm4")) > 0 })
}

// kill -9 right after a state change: the notification is not lost. The
// receiver holds every request during the first run, so nothing can have
// been delivered before the kill; after the restart it answers.
func TestWebhookCrashLosesNone(t *testing.T) {
	rcv := newHookReceiver(t)
	hold := make(chan struct{})
	rcv.set(0, hold)
	s1, whsec := webhookSecret(t, t.TempDir(), "hook")
	e := New(t, Options{ExtraConfig: webhookConfig(rcv.srv.URL, s1, "")})
	e.CreateTenant("acme")
	e.StoreToken(AppAcme, "crm")
	e.Kill9()
	close(hold)
	rcv.set(0, nil)
	e.Start()
	hookWait(t, "the notification after the crash", func() bool {
		for _, r := range rcv.find(t, "integration.connected", "crm") {
			wh, err := standardwebhooks.NewWebhook(whsec)
			must(t, err)
			if wh.Verify(r.body, r.header) == nil {
				return true
			}
		}
		return false
	})
	hookWait(t, "no pending delivery", func() bool {
		return strings.Contains(adminGet(t, e, "/v1/admin/webhooks/deliveries?status=pending"), `"deliveries":[]`)
	})
}
