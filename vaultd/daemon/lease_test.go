package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vaultd/vaultd/internal/pgtest"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/postgres"
	"github.com/vaultd/vaultd/vaultd/audit"
	whnotify "github.com/vaultd/vaultd/vaultd/notify"
)

// pgNodes opens n stores on one fresh, migrated database, each with its
// audit log: n vaultd nodes' view of the shared state.
func pgNodes(t *testing.T, n int) ([]*postgres.Store, []*audit.Log) {
	t.Helper()
	db := pgtest.New(t)
	var sts []*postgres.Store
	var logs []*audit.Log
	for i := range n {
		st, err := postgres.Open(t.Context(), db.DSN, postgres.Options{ForMigration: i == 0})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = st.Close() })
		if i == 0 {
			if err := st.Migrate(t.Context()); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
		}
		l, err := audit.New(t.Context(), st, audit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		sts, logs = append(sts, st), append(logs, l)
	}
	return sts, logs
}

// waitFor polls cond (a state, not a time) until it holds or 20s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two nodes' dispatchers on one database, each under the webhooks lease,
// with the lease passed from one to the other and back: every state
// change is queued once and delivered by one node.
func TestWebhooksOneDispatcherAcrossNodes(t *testing.T) {
	sts, logs := pgNodes(t, 2)
	var mu sync.Mutex
	senders := map[string]map[string]bool{} // webhook-id -> the nodes that sent it
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		id := r.Header.Get("webhook-id")
		if senders[id] == nil {
			senders[id] = map[string]bool{}
		}
		senders[id][r.URL.Query().Get("node")] = true
		mu.Unlock()
	}))
	defer srv.Close()
	quiet := slog.New(slog.DiscardHandler)
	nodes := make([]*webhooks, 2)
	for i, st := range sts {
		// One webhook (one key); each node's URL names the node, so the
		// receiver sees who sent what.
		u, err := url.Parse(srv.URL + "/hook?node=" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		hook := whnotify.Webhook{Key: "h", URL: u, Secret: secret.NewBytes(make([]byte, 32)), Events: []string{"*"}, RetrySchedule: []time.Duration{time.Second}}
		d, err := whnotify.New(whnotify.Options{
			Store: st, Audit: logs[i], Logger: quiet, PollInterval: 20 * time.Millisecond,
			Webhooks: func() []whnotify.Webhook { return []whnotify.Webhook{hook} },
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Init(t.Context()); err != nil {
			t.Fatal(err)
		}
		nodes[i] = &webhooks{d: d, leaser: func() leaser { return pgLeaser{st.Leaser()} }, leaseEvery: 20 * time.Millisecond, log: quiet,
			cursor: st.WebhookCursor}
	}
	// start runs node i's loop until the returned stop is called.
	start := func(i int) (stop func()) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			nodes[i].run(ctx)
		}()
		return func() { cancel(); <-done }
	}
	change := func(n int, integration string) {
		t.Helper()
		if _, err := logs[n].Record(t.Context(), audit.Event{Actor: "app", TenantID: "acme", IntegrationID: integration,
			Action: audit.ActionTokenStore, Outcome: audit.OutcomeSuccess, Detail: "provider=example"}); err != nil {
			t.Fatal(err)
		}
	}
	delivered := func(want int) func() bool {
		return func() bool {
			ds, err := sts[0].ListDeliveries(t.Context(), storage.DeliveryDelivered, 0)
			return err == nil && len(ds) >= want
		}
	}

	stop0, stop1 := start(0), start(1)
	change(0, "crm")
	change(1, "mail")
	waitFor(t, "2 deliveries", delivered(2))
	stop0() // if node 0 dispatched, node 1 takes over
	change(1, "drive")
	waitFor(t, "3 deliveries", delivered(3))
	stop0 = start(0)
	stop1() // and back
	change(0, "calendar")
	change(1, "chat")
	waitFor(t, "5 deliveries", delivered(5))
	stop0() // Run waits for the attempts in flight: nothing more is sent

	all, err := sts[1].ListDeliveries(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 {
		t.Errorf("%d deliveries queued, want 5 (one per state change)", len(all))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(senders) != 5 {
		t.Errorf("the receiver got %d distinct deliveries, want 5", len(senders))
	}
	for id, from := range senders {
		if len(from) != 1 {
			t.Errorf("delivery %s was sent by %d nodes", id, len(from))
		}
	}
}

// A round runs only where its lease is had: while another node holds it,
// leased skips the round; with bbolt (singleNode) it always runs.
func TestLeasedSkipsRoundHeldElsewhere(t *testing.T) {
	sts, _ := pgNodes(t, 2)
	d := &daemon{store: sts[0], log: slog.New(slog.DiscardHandler)}
	l := d.newLeaser()
	defer l.Close()
	if _, ok := l.(pgLeaser); !ok {
		t.Fatalf("leaser on postgres is %T", l)
	}
	other := sts[1].Leaser()
	defer other.Close()
	x, ok, err := other.TryLease(t.Context(), leaseSweep)
	if err != nil || !ok {
		t.Fatalf("other node: ok=%v err=%v", ok, err)
	}
	var failing bool
	ran := 0
	if d.leased(t.Context(), l, leaseSweep, &failing, func() { ran++ }) || ran != 0 {
		t.Fatal("a round ran while another node held its lease")
	}
	if !d.leased(t.Context(), l, leaseRetention, &failing, func() { ran++ }) || ran != 1 {
		t.Fatal("a round of another lease did not run")
	}
	x.Release()
	if !d.leased(t.Context(), l, leaseSweep, &failing, func() { ran++ }) || ran != 2 {
		t.Fatal("the round did not run once the lease was free")
	}
	// Released after the round: the other node has it again.
	y, ok, err := other.TryLease(t.Context(), leaseSweep)
	if err != nil || !ok {
		t.Fatalf("after the round: ok=%v err=%v", ok, err)
	}
	y.Release()

	var single singleNode
	if !d.leased(t.Context(), single, leaseSweep, &failing, func() { ran++ }) || ran != 3 {
		t.Fatal("single node: the round did not run")
	}
}
