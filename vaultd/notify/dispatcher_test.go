package notify

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/storage/inmem"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// clock is the injected clock: retries are scheduled on it, so no test
// waits for a delay.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type received struct {
	header http.Header
	body   []byte
}

// receiver is a webhook endpoint on 127.0.0.1: it records what it gets
// and answers statuses[n] to the n-th request (200 past the end).
type receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	got      []received
	statuses []int
	hold     chan struct{} // when set, requests block until it closes
	entered  chan struct{} // a request arrived (buffered)
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	r := &receiver{statuses: statuses, entered: make(chan struct{}, 64)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		n := len(r.got)
		r.got = append(r.got, received{header: req.Header.Clone(), body: body})
		hold := r.hold
		status := http.StatusOK
		if n < len(r.statuses) {
			status = r.statuses[n]
		}
		r.mu.Unlock()
		r.entered <- struct{}{}
		if hold != nil {
			select {
			case <-hold:
			case <-req.Context().Done():
				return
			}
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte("receiver says: " + strings.Repeat("x", 10000)))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

func (r *receiver) url(t *testing.T) *url.URL {
	u, err := url.Parse(r.srv.URL + "/hook?k=v")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// newKey is a webhook secret: the raw key and its whsec_ form.
func newKey(t *testing.T) ([]byte, string) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k, "whsec_" + base64.StdEncoding.EncodeToString(k)
}

type env struct {
	t     *testing.T
	ctx   context.Context
	store Store
	log   *audit.Log
	clock *clock
	reg   *prometheus.Registry
	d     *Dispatcher
	hooks []Webhook
	mu    sync.Mutex
}

type fullStore interface {
	Store
	audit.Store
}

func newEnv(t *testing.T, st fullStore, hooks ...Webhook) *env {
	t.Helper()
	ctx := t.Context()
	l, err := audit.New(ctx, st, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	e := &env{t: t, ctx: ctx, store: st, log: l, clock: &clock{t: time.Now().UTC()}, reg: prometheus.NewRegistry(), hooks: hooks}
	// Something happened before the dispatcher existed: history, not news.
	e.record(audit.Event{Actor: "app", TenantID: "acme", IntegrationID: "old", Action: audit.ActionTokenStore, Outcome: audit.OutcomeSuccess, Detail: "provider=example"})
	e.d = e.dispatcher()
	return e
}

func (e *env) dispatcher() *Dispatcher {
	e.t.Helper()
	d, err := New(Options{
		Store: e.store, Audit: e.log, Now: e.clock.Now, Registerer: e.reg,
		Webhooks: func() []Webhook {
			e.mu.Lock()
			defer e.mu.Unlock()
			return append([]Webhook(nil), e.hooks...)
		},
		AttemptTimeout: 2 * time.Second,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := d.Init(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	return d
}

func (e *env) record(ev audit.Event) audit.Event {
	e.t.Helper()
	out, err := e.log.Record(e.ctx, ev)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) connected(tenant, integration string) audit.Event {
	return e.record(audit.Event{Actor: "app", TenantID: tenant, IntegrationID: integration, Action: audit.ActionTokenStore,
		Outcome: audit.OutcomeSuccess, Detail: "provider=example"})
}

func (e *env) tail() int {
	e.t.Helper()
	n, _, err := e.d.Tail(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// deliver starts the due attempts and waits for them.
func (e *env) deliver() int {
	e.t.Helper()
	n, err := e.d.DeliverDue(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	e.d.wait()
	return n
}

func (e *env) deliveries(status string) []storage.Delivery {
	e.t.Helper()
	ds, err := e.d.Deliveries(e.ctx, status, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return ds
}

func (e *env) auditLines(action string) []audit.Event {
	e.t.Helper()
	var out []audit.Event
	err := e.store.ScanAudit(e.ctx, 0, func(rec storage.AuditRecord) (bool, error) {
		ev, err := audit.ParseEvent(rec.Data)
		if err != nil {
			return false, err
		}
		if ev.Action == action {
			out = append(out, ev)
		}
		return true, nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func hookFor(t *testing.T, r *receiver, key []byte, schedule ...time.Duration) Webhook {
	return Webhook{Key: "hook" + strconv.Itoa(len(r.srv.URL)%10) + r.srv.URL[len(r.srv.URL)-4:], URL: r.url(t),
		Secret: secret.NewBytes(key), Events: []string{"*"}, RetrySchedule: schedule}
}

func TestDeliverSignedStandardWebhook(t *testing.T) {
	rcv := newReceiver(t)
	key, whsec := newKey(t)
	e := newEnv(t, inmem.New(), hookFor(t, rcv, key, time.Second))
	ev := e.connected("acme", "crm")
	if n := e.tail(); n != 1 {
		t.Fatalf("queued %d, want 1 (history before Init is not news)", n)
	}
	if n := e.deliver(); n != 1 {
		t.Fatalf("started %d", n)
	}
	got := rcv.requests()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests", len(got))
	}
	h, body := got[0].header, got[0].body
	// The reference implementation verifies it (the clock is real time
	// here, so its timestamp tolerance applies too).
	wh, err := standardwebhooks.NewWebhook(whsec)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(body, h); err != nil {
		t.Fatalf("reference verification: %v", err)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content-type %q", ct)
	}
	if id := h.Get(HeaderID); !strings.HasPrefix(id, "msg_") || !storage.ValidID(id) {
		t.Errorf("webhook-id %q", id)
	}
	if ts := h.Get(HeaderTimestamp); ts != strconv.FormatInt(e.clock.Now().Unix(), 10) {
		t.Errorf("webhook-timestamp %q", ts)
	}
	var b Body
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	want := Body{Type: TypeIntegrationConnected, Timestamp: ev.Time.Format(audit.TimeLayout),
		Data: Data{TenantID: "acme", IntegrationID: "crm", Provider: "example", Status: "active", Reason: "token stored"}}
	if b != want {
		t.Errorf("body %+v\nwant %+v", b, want)
	}
	ds := e.deliveries(storage.DeliveryDelivered)
	if len(ds) != 1 || ds[0].Attempts != 1 || ds[0].Seq != ev.Seq || ds[0].ID != h.Get(HeaderID) {
		t.Errorf("stored %+v", ds)
	}
	if v := testutil.ToFloat64(e.d.m.deliveries.WithLabelValues(OutcomeDelivered)); v != 1 {
		t.Errorf("delivered metric %v", v)
	}
	if v := testutil.ToFloat64(e.d.m.pending); v != 0 {
		t.Errorf("pending gauge %v", v)
	}
	// Delivered once: nothing more to send.
	if n := e.tail() + e.deliver(); n != 0 {
		t.Errorf("%d more", n)
	}
}

// A failed attempt waits for the schedule's next delay, on the clock; the
// retry carries the same webhook-id; after the last retry fails the
// delivery is dead-lettered with its audit event; an operator's
// redelivery sends it again, same id, and it gets through.
func TestRetryScheduleDeadLetterRedeliver(t *testing.T) {
	rcv := newReceiver(t, 500, 503, 404)
	key, whsec := newKey(t)
	e := newEnv(t, inmem.New(), hookFor(t, rcv, key, 5*time.Second, time.Minute))
	e.record(audit.Event{Actor: "ops", TenantID: "acme", Action: audit.ActionTenantDisable, Outcome: audit.OutcomeSuccess})
	e.tail()
	if e.deliver() != 1 {
		t.Fatal("first attempt not made")
	}
	d := e.deliveries(storage.DeliveryPending)[0]
	if d.Attempts != 1 || d.LastError != "http_500" || !d.NextAttemptAt.Equal(e.clock.Now().Add(5*time.Second)) {
		t.Fatalf("after attempt 1: %+v", d)
	}
	e.clock.Advance(5*time.Second - time.Millisecond)
	if n := e.deliver(); n != 0 {
		t.Fatalf("retried %v early", time.Millisecond)
	}
	e.clock.Advance(time.Millisecond)
	if e.deliver() != 1 {
		t.Fatal("no retry when due")
	}
	d = e.deliveries(storage.DeliveryPending)[0]
	if d.Attempts != 2 || d.LastError != "http_503" || !d.NextAttemptAt.Equal(e.clock.Now().Add(time.Minute)) {
		t.Fatalf("after attempt 2: %+v", d)
	}
	e.clock.Advance(time.Minute)
	if e.deliver() != 1 {
		t.Fatal("no last attempt")
	}
	if p := e.deliveries(storage.DeliveryPending); len(p) != 0 {
		t.Fatalf("still pending: %+v", p)
	}
	failed := e.deliveries(storage.DeliveryFailed)
	if len(failed) != 1 || failed[0].Attempts != 3 || failed[0].LastError != "http_404" {
		t.Fatalf("dead letter %+v", failed)
	}
	dl := e.auditLines(audit.ActionWebhookDeadLetter)
	if len(dl) != 1 {
		t.Fatalf("dead-letter events: %+v", dl)
	}
	if want := "webhook=" + failed[0].Webhook + " type=tenant.disabled delivery=" + failed[0].ID + " attempts=3 last_error=http_404"; dl[0].Detail != want || dl[0].TenantID != "acme" {
		t.Errorf("dead-letter event %+v", dl[0])
	}
	if strings.Contains(dl[0].Detail, "k=v") || strings.Contains(dl[0].Detail, "127.0.0.1") {
		t.Errorf("dead-letter detail names the URL: %q", dl[0].Detail)
	}
	if v := testutil.ToFloat64(e.d.m.deadLetters); v != 1 {
		t.Errorf("dead letters metric %v", v)
	}
	if v := testutil.ToFloat64(e.d.m.deliveries.WithLabelValues(OutcomeRetry)); v != 2 {
		t.Errorf("retry metric %v", v)
	}
	e.clock.Advance(time.Hour)
	if e.deliver() != 0 {
		t.Fatal("a dead letter was sent again on its own")
	}

	red, err := e.d.Redeliver(e.ctx, audit.Event{Actor: "ops-admin", RequestID: "r1"}, failed[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if red.Status != storage.DeliveryPending || red.Attempts != 0 || !red.NextAttemptAt.Equal(e.clock.Now()) {
		t.Fatalf("redelivered %+v", red)
	}
	if e.deliver() != 1 {
		t.Fatal("redelivery not sent")
	}
	ok := e.deliveries(storage.DeliveryDelivered)
	if len(ok) != 1 || ok[0].Attempts != 1 {
		t.Fatalf("after redelivery %+v", ok)
	}
	got := rcv.requests()
	if len(got) != 4 {
		t.Fatalf("%d requests", len(got))
	}
	wh, _ := standardwebhooks.NewWebhook(whsec)
	for i, r := range got {
		if r.header.Get(HeaderID) != failed[0].ID {
			t.Errorf("attempt %d has webhook-id %q, want %q", i, r.header.Get(HeaderID), failed[0].ID)
		}
		if string(r.body) != string(got[0].body) {
			t.Errorf("attempt %d body differs", i)
		}
		if err := wh.VerifyIgnoringTimestamp(r.body, r.header); err != nil {
			t.Errorf("attempt %d: %v", i, err)
		}
	}
	re := e.auditLines(audit.ActionWebhookRedeliver)
	if len(re) != 1 || re[0].Actor != "ops-admin" || re[0].RequestID != "r1" || re[0].TenantID != "acme" ||
		!strings.Contains(re[0].Detail, "delivery="+failed[0].ID) || !strings.Contains(re[0].Detail, "was=failed") {
		t.Errorf("redeliver events %+v", re)
	}
	if _, err := e.d.Redeliver(e.ctx, audit.Event{Actor: "ops-admin"}, "msg_nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	if _, err := e.d.Redeliver(e.ctx, audit.Event{Actor: "ops-admin"}, "../x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("bad id: %v", err)
	}
}

// A receiver that never answers holds at most PerWebhook workers, so
// another webhook's deliveries go through meanwhile, and the trail is
// tailed as usual.
func TestHangingReceiverBlocksNothingElse(t *testing.T) {
	slow, fast := newReceiver(t), newReceiver(t)
	slow.hold = make(chan struct{})
	k1, _ := newKey(t)
	k2, _ := newKey(t)
	hs, hf := hookFor(t, slow, k1, time.Second), hookFor(t, fast, k2, time.Second)
	hs.Key, hf.Key = "slow", "fast"
	e := newEnv(t, inmem.New(), hs, hf)
	e.d.timeout = time.Hour // the receiver is released below, not timed out
	for i := range 5 {
		e.connected("acme", "i"+strconv.Itoa(i))
	}
	if n := e.tail(); n != 10 {
		t.Fatalf("queued %d", n)
	}
	// Poll until the fast receiver has all five (a bounded loop, not a
	// timing assertion) while the slow one hangs.
	deadline := time.Now().Add(60 * time.Second)
	for len(fast.requests()) < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("fast receiver starved: %d of 5", len(fast.requests()))
		}
		if _, err := e.d.DeliverDue(e.ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	// Tailing goes on while the receiver hangs.
	e.connected("acme", "late")
	if n := e.tail(); n != 2 {
		t.Fatalf("tail while hanging queued %d", n)
	}
	if n := len(slow.requests()); n != DefaultPerWebhook {
		t.Errorf("slow receiver has %d requests, want %d at once", n, DefaultPerWebhook)
	}
	close(slow.hold)
	e.d.wait()
}

// A hanging receiver with a backlog longer than one page of due
// deliveries does not hide another webhook's delivery behind it.
func TestHangingBacklogDoesNotStarveOthers(t *testing.T) {
	slow, fast := newReceiver(t), newReceiver(t)
	slow.hold = make(chan struct{})
	k1, _ := newKey(t)
	k2, _ := newKey(t)
	hs, hf := hookFor(t, slow, k1, time.Second), hookFor(t, fast, k2, time.Second)
	hs.Key, hf.Key = "slow", "fast"
	hs.Tenants, hf.Tenants = []string{"acme"}, []string{"globex"}
	e := newEnv(t, inmem.New(), hs, hf)
	e.d.timeout = time.Hour
	for i := range 3 * maxDue {
		e.connected("acme", "i"+strconv.Itoa(i))
	}
	e.connected("globex", "g")
	for queued := 0; queued < 3*maxDue+1; {
		n := e.tail()
		if n == 0 {
			t.Fatalf("tail stalled at %d", queued)
		}
		queued += n
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(fast.requests()) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the other webhook's delivery was never started")
		}
		if _, err := e.d.DeliverDue(e.ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	close(slow.hold)
	e.d.wait()
}

// staleList answers ListDeliveries with a page read earlier, as happens
// when an attempt finishes between a round's listing and its start.
type staleList struct {
	fullStore
	page []storage.Delivery
}

func (s *staleList) ListDeliveries(ctx context.Context, status string, limit int) ([]storage.Delivery, error) {
	if s.page != nil {
		return s.page, nil
	}
	return s.fullStore.ListDeliveries(ctx, status, limit)
}

// A delivery that was delivered after the round listed it is not sent
// again (the receiver sees it once).
func TestDeliveredSinceListingNotResent(t *testing.T) {
	rcv := newReceiver(t)
	key, _ := newKey(t)
	st := &staleList{fullStore: inmem.New()}
	e := newEnv(t, st, hookFor(t, rcv, key, time.Second))
	e.connected("acme", "crm")
	if n := e.tail(); n != 1 {
		t.Fatalf("queued %d", n)
	}
	page, err := st.fullStore.ListDeliveries(e.ctx, storage.DeliveryPending, 10)
	if err != nil || len(page) != 1 {
		t.Fatalf("pending %v %v", page, err)
	}
	if n := e.deliver(); n != 1 {
		t.Fatalf("first round started %d", n)
	}
	st.page = page // the stale listing: still pending there
	if n := e.deliver(); n != 0 {
		t.Fatalf("a delivered delivery was started again (%d)", n)
	}
	if got := len(rcv.requests()); got != 1 {
		t.Fatalf("receiver got %d requests, want 1", got)
	}
}

// An attempt that gets no answer in time is a failure like any other.
func TestAttemptTimeout(t *testing.T) {
	rcv := newReceiver(t)
	rcv.hold = make(chan struct{})
	t.Cleanup(func() { close(rcv.hold) })
	k, _ := newKey(t)
	e := newEnv(t, inmem.New(), hookFor(t, rcv, k, time.Second))
	e.d.timeout = 100 * time.Millisecond
	e.connected("acme", "x")
	e.tail()
	e.deliver()
	if d := e.deliveries(storage.DeliveryPending); len(d) != 1 || d[0].LastError != "timeout" || d[0].Attempts != 1 {
		t.Errorf("%+v", d)
	}
}

func TestFilters(t *testing.T) {
	all, acmeInt, tenants := newReceiver(t), newReceiver(t), newReceiver(t)
	k, _ := newKey(t)
	ha := hookFor(t, all, k)
	ha.Key, ha.Events = "all", []string{"*"}
	hb := hookFor(t, acmeInt, k)
	hb.Key, hb.Tenants, hb.Events = "acme-int", []string{"acme"}, []string{"integration.*"}
	hc := hookFor(t, tenants, k)
	hc.Key, hc.Events = "tenants", []string{"tenant.offboarded", "key.rotated"}
	e := newEnv(t, inmem.New(), ha, hb, hc)
	e.connected("acme", "a1")
	e.connected("globex", "g1")
	e.record(audit.Event{Actor: "ops", TenantID: "acme", Action: audit.ActionTenantOffboard, Outcome: audit.OutcomeSuccess})
	e.record(audit.Event{Actor: "ops", TenantID: "globex", Action: audit.ActionKeyRotate, Outcome: audit.OutcomeSuccess, Detail: "dek_version=2 kek_version=1"})
	e.record(audit.Event{Actor: "app", TenantID: "acme", IntegrationID: "a1", Action: audit.ActionProxyRequest, Outcome: audit.OutcomeSuccess})
	e.tail()
	got := map[string][]string{}
	for _, d := range e.deliveries("") {
		got[d.Webhook] = append(got[d.Webhook], d.TenantID+"/"+d.Type)
	}
	want := map[string]int{"all": 4, "acme-int": 1, "tenants": 2}
	for k, n := range want {
		if len(got[k]) != n {
			t.Errorf("%s got %v, want %d", k, got[k], n)
		}
	}
	if len(got["acme-int"]) == 1 && got["acme-int"][0] != "acme/integration.connected" {
		t.Errorf("acme-int got %v", got["acme-int"])
	}
}

// A sweep's disconnect says why: the reason of its integration.sweep
// event carries over to the integration.delete that follows.
func TestSweepReasonCarriesOver(t *testing.T) {
	rcv := newReceiver(t)
	k, _ := newKey(t)
	e := newEnv(t, inmem.New(), hookFor(t, rcv, k))
	sweep := func(id, detail string) {
		e.record(audit.Event{Actor: "vaultd", TenantID: "acme", IntegrationID: id, Action: audit.ActionIntegrationSweep, Outcome: audit.OutcomeSuccess, Detail: detail})
	}
	del := func(id string) {
		e.record(audit.Event{Actor: "vaultd", TenantID: "acme", IntegrationID: id, Action: audit.ActionIntegrationDelete, Outcome: audit.OutcomeSuccess, Detail: "revoked_at_provider=true"})
	}
	sweep("idle", "idle_disconnect last_used: 91d ago, idle_disconnect_after 90d")
	e.tail() // the delete comes in a later round
	del("idle")
	sweep("stuck", "reauth_purge: reauthorization_required for 31d, reauth_purge_after 30d")
	del("stuck")
	del("manual")
	if n := e.tail(); n != 3 {
		t.Fatalf("queued %d", n)
	}
	got := map[string]string{}
	for _, d := range e.deliveries("") {
		var b Body
		if err := json.Unmarshal(d.Body, &b); err != nil {
			t.Fatal(err)
		}
		got[b.Data.IntegrationID] = b.Data.Reason
	}
	want := map[string]string{"idle": ReasonIdle, "stuck": ReasonReauth, "manual": "deleted; revoked at the provider"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reasons %v, want %v", got, want)
	}
}

// The deliveries and the cursor commit together: a dispatcher that dies
// after events were recorded and before it tailed them finds them at the
// next start (bbolt, closed and reopened like a restarted daemon); one
// that died after queuing them does not queue them twice.
func TestCrashLosesNothing(t *testing.T) {
	rcv := newReceiver(t)
	k, _ := newKey(t)
	path := filepath.Join(t.TempDir(), "vault.db")
	open := func() *bolt.Store {
		st, err := bolt.Open(t.Context(), path, bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := open()
	e := newEnv(t, st, hookFor(t, rcv, k, time.Second))
	e.connected("acme", "before-crash")
	e.tail()
	e.connected("acme", "at-crash") // recorded, never tailed: the crash
	_ = e.log.Close()
	_ = st.Close()

	st2 := open()
	t.Cleanup(func() { _ = st2.Close() })
	e2 := &env{t: t, ctx: t.Context(), store: st2, clock: e.clock, reg: prometheus.NewRegistry(), hooks: e.hooks}
	l2, err := audit.New(t.Context(), st2, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l2.Close() })
	e2.log = l2
	e2.d = e2.dispatcher()
	if n := e2.tail(); n != 1 {
		t.Fatalf("after restart queued %d, want the one event not yet tailed", n)
	}
	e2.deliver()
	var ids []string
	for _, r := range rcv.requests() {
		var b Body
		_ = json.Unmarshal(r.body, &b)
		ids = append(ids, b.Data.IntegrationID)
	}
	slices.Sort(ids)
	if strings.Join(ids, ",") != "at-crash,before-crash" {
		t.Errorf("delivered %v", ids)
	}
}

// Audit retention never prunes the events a delivery may still be made
// of: a Before capped at RetentionFloor keeps the cursor's event and all
// after it.
func TestRetentionFloor(t *testing.T) {
	st := inmem.New()
	e := newEnv(t, st)
	for i := range 5 {
		e.connected("acme", "i"+strconv.Itoa(i))
	}
	// No webhooks: the cursor moves alone, stored at most every
	// cursorEvery.
	e.tail()
	if c, _ := e.store.WebhookCursor(e.ctx); c != 1 {
		t.Fatalf("cursor stored at once: %d", c)
	}
	e.clock.Advance(cursorEvery)
	e.tail()
	cursor, err := e.store.WebhookCursor(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		e.connected("acme", "j"+strconv.Itoa(i))
	}
	floor, ok, err := e.d.RetentionFloor(e.ctx)
	if err != nil || !ok {
		t.Fatalf("floor: %v %v", ok, err)
	}
	before := time.Now().Add(time.Hour) // everything is old enough
	if floor.Before(before) {
		before = floor
	}
	if _, err := e.log.Prune(e.ctx, audit.PruneOptions{Before: before}); err != nil {
		t.Fatal(err)
	}
	anchor, err := st.AuditAnchor(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if anchor.Seq == 0 || anchor.Seq >= cursor {
		t.Fatalf("pruned up to %d with the cursor at %d", anchor.Seq, cursor)
	}
}

// A redirect is an answer, not an instruction: it is not followed.
func TestRedirectNotFollowed(t *testing.T) {
	target := newReceiver(t)
	redir := httptest.NewServer(http.RedirectHandler(target.srv.URL, http.StatusTemporaryRedirect))
	t.Cleanup(redir.Close)
	k, _ := newKey(t)
	u, _ := url.Parse(redir.URL)
	e := newEnv(t, inmem.New(), Webhook{Key: "r", URL: u, Secret: secret.NewBytes(k), RetrySchedule: []time.Duration{time.Second}})
	e.connected("acme", "x")
	e.tail()
	e.deliver()
	if len(target.requests()) != 0 {
		t.Fatal("redirect followed")
	}
	if d := e.deliveries(storage.DeliveryPending); len(d) != 1 || d[0].LastError != "http_307" {
		t.Errorf("%+v", d)
	}
}

// A webhook removed from the config dead-letters its pending deliveries.
func TestRemovedWebhookDeadLetters(t *testing.T) {
	rcv := newReceiver(t, 500)
	k, _ := newKey(t)
	e := newEnv(t, inmem.New(), hookFor(t, rcv, k, time.Second))
	e.connected("acme", "x")
	e.tail()
	e.deliver()
	e.mu.Lock()
	e.hooks = nil
	e.mu.Unlock()
	e.clock.Advance(time.Second)
	e.deliver()
	if f := e.deliveries(storage.DeliveryFailed); len(f) != 1 || f[0].LastError != "webhook_not_configured" {
		t.Errorf("%+v", f)
	}
}

func TestCheckEgress(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://hooks.example.com/x":   true,
		"http://127.0.0.1:8080/x":       true,
		"http://[::1]:8080/x":           true,
		"http://localhost/x":            true,
		"http://hooks.example.com/x":    false,
		"http://10.0.0.1/x":             false,
		"ftp://127.0.0.1/x":             false,
		"https://user:pw@example.com/x": false,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := CheckEgress(u) == nil; got != ok {
			t.Errorf("%s: allowed %v", raw, got)
		}
	}
}

func TestPruneDeliveries(t *testing.T) {
	rcv := newReceiver(t)
	k, _ := newKey(t)
	e := newEnv(t, inmem.New(), hookFor(t, rcv, k))
	e.connected("acme", "x")
	e.tail()
	e.deliver()
	e.clock.Advance(DefaultRetain - time.Minute)
	e.d.prune(e.ctx)
	if len(e.deliveries("")) != 1 {
		t.Fatal("pruned too early")
	}
	e.clock.Advance(2 * time.Minute)
	e.d.prune(e.ctx)
	if d := e.deliveries(""); len(d) != 0 {
		t.Fatalf("kept %+v", d)
	}
}

// Run delivers on its own and stops with its context.
func TestRun(t *testing.T) {
	rcv := newReceiver(t)
	k, _ := newKey(t)
	st := inmem.New()
	l, err := audit.New(t.Context(), st, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Store: st, Audit: l, PollInterval: 10 * time.Millisecond,
		Webhooks: func() []Webhook { return []Webhook{hookFor(t, rcv, k)} }})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	if _, err := l.Record(t.Context(), audit.Event{Actor: "ops", TenantID: "acme", Action: audit.ActionTenantDisable, Outcome: audit.OutcomeSuccess}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rcv.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("not delivered")
	}
	cancel()
	<-done
}
