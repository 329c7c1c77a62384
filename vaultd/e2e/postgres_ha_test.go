package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/vaultd/vaultd/internal/pgtest"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/client"
	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// High availability on PostgreSQL, end to end: three vaultd nodes on one
// database (postgres_test.go's helpers), a refresh storm over all of them,
// a node killed in the middle of a refresh, and notifications sent once
// whichever node made the change.

// pgCluster starts three nodes on one fresh database; opts applies to all
// (ExtraConfig included, so every node has the same [[webhooks]]).
func pgCluster(t *testing.T, opts Options) ([]*Env, pgtest.Database) {
	t.Helper()
	a, db := newPGEnv(t, opts)
	nodes := []*Env{a, pgNode(t, a, 1, nil), pgNode(t, a, 2, nil)}
	for _, n := range nodes[1:] {
		n.Start()
	}
	return nodes, db
}

// storeExpired stores a grant for integration id of acme whose access
// token has expired by the time it returns (expires_in 1s, then a bounded
// wait for the expiry vaultd recorded); the provider issues long-lived
// tokens from then on.
func storeExpired(t *testing.T, e *Env, id string) oauth.Token {
	t.Helper()
	e.Provider.SetExpiresIn(1)
	tok := e.StoreToken(AppAcme, id)
	e.Provider.SetExpiresIn(longLived)
	md, err := e.Client(AppAcme).GetIntegration(t.Context(), id)
	must(t, err)
	if md.ExpiresAt == nil {
		t.Fatalf("%s: no expires_at recorded", id)
	}
	refreshUntil(t, "the stored access token expired", func() bool { return time.Now().After(md.ExpiresAt.Add(10 * time.Millisecond)) })
	return tok
}

// exportWhole is the node's whole audit export (up to the route's largest
// limit, 10000 events: the default 1000 would cut a storm's trail short),
// verified as one chain from seq 1.
func exportWhole(t *testing.T, e *Env) []string {
	t.Helper()
	var sb strings.Builder
	if err := e.Client(Auditor).Audit(t.Context(), client.AuditQuery{Limit: 10000}, &sb); err != nil {
		t.Fatal(err)
	}
	res, err := audit.Verify(strings.NewReader(sb.String()))
	if err != nil {
		t.Fatalf("export of %s does not verify: %v", e.API, err)
	}
	if res.Events == 0 || !res.Anchored {
		t.Fatalf("export of %s: %+v, want a chain from seq 1", e.API, res)
	}
	lines := strings.Split(strings.TrimSpace(sb.String()), "\n")
	if len(lines) >= 10000 {
		t.Fatalf("export of %s: %d events, the trail may go on", e.API, len(lines))
	}
	return lines
}

// sameChain exports every node's trail, checks that each verifies from seq
// 1 and that the later ones extend the first (one chain, not one per
// node), and returns the first export's lines.
func sameChain(t *testing.T, nodes []*Env) []string {
	t.Helper()
	var first []string
	for i, node := range nodes {
		lines := exportWhole(t, node)
		if i == 0 {
			first = lines
			continue
		}
		if len(lines) < len(first) || strings.Join(lines[:len(first)], "\n") != strings.Join(first, "\n") {
			t.Fatalf("node %d's export is not the same chain as node 0's", i)
		}
	}
	return first
}

// countEvents counts the exported events with that action (and, when not
// "", that outcome).
func countEvents(lines []string, action, outcome string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, `"action":"`+action+`"`) && (outcome == "" || strings.Contains(l, `"outcome":"`+outcome+`"`)) {
			n++
		}
	}
	return n
}

// waitEntered waits (bounded) for a held provider call to arrive.
func waitEntered(t *testing.T, entered <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-entered:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: no call reached the provider", what)
	}
}

// smallPoolSize is node C's [storage] max_connections in the storm.
const smallPoolSize = 6

// TestPostgresHAStormOnExpiredToken: 1,000 callers spread over three nodes
// all ask for an integration whose access token has expired. The token
// endpoint is held until every request has been written to its node, so
// the whole storm queues behind the one refresh: the provider sees exactly
// one call, every caller's proxied call succeeds with the new token, and
// every node exports the same single chain, which verifies. Node C runs
// with a small pool ([storage] max_connections), which holds.
func TestPostgresHAStormOnExpiredToken(t *testing.T) {
	a, db := newPGEnv(t, Options{})
	nodes := []*Env{a, pgNode(t, a, 1, nil), pgNode(t, a, 2, smallPool(t, a, db, "vaultd-node2", smallPoolSize))}
	for _, n := range nodes[1:] {
		n.Start()
	}
	a.CreateTenant("acme")
	old := storeExpired(t, a, "crm")

	// One HTTP/2 connection per node before the storm, so the storm is
	// requests rather than a thousand TLS handshakes.
	clients := make([]*http.Client, len(nodes))
	for i, node := range nodes {
		clients[i] = node.HTTP(AppAcme)
		if r := obDo(t, clients[i], http.MethodGet, node.API+"/v1/integrations/crm", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("node %d: metadata %d %s", i, r.Status, r.Body)
		}
	}
	entered, release := a.Provider.Hold(oauthtest.HoldToken)
	defer release()
	refBefore := a.Provider.RefreshCount()

	const n = 1000
	statuses := make([]int, n)
	var written atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		node, hc := nodes[i%3], clients[i%3]
		wg.Go(func() {
			trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { written.Add(1) }}
			ctx := httptrace.WithClientTrace(context.Background(), trace)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, node.API+"/v1/integrations/crm/proxy/contacts/1", nil)
			if err != nil {
				statuses[i] = -1
				return
			}
			resp, err := hc.Do(req)
			if err != nil {
				statuses[i] = -1
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	waitEntered(t, entered, "the storm")
	hookWait(t, "every request of the storm written", func() bool { return written.Load() >= n })
	release()
	wg.Wait()

	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("caller %d (node %d): status %d\n%s", i, i%3, s, nodes[i%3].Logs())
		}
	}
	if got := a.Provider.RefreshCount() - refBefore; got != 1 {
		t.Fatalf("%d calls to token_url for %d callers on 3 nodes, want exactly 1", got, n)
	}
	if a.Provider.RefreshTokenValid(old.RefreshToken) || a.Provider.AccessTokenValid(old.AccessToken) {
		t.Error("the old grant is still valid: it was not rotated")
	}
	for i, node := range nodes {
		md, err := node.Client(AppAcme).GetIntegration(t.Context(), "crm")
		if err != nil || md.Status != "active" || md.RefreshCount != 1 {
			t.Errorf("node %d: integration %+v %v, want active and refreshed once", i, md, err)
		}
	}
	// Node C's [storage] max_connections bounded its pool through the
	// storm (the others grew to their default 16), its background leases'
	// own sessions (at most five) aside.
	if conns := pgConnections(t, db); conns["vaultd-node2"] < 1 || conns["vaultd-node2"] > smallPoolSize+5 {
		t.Errorf("node C has %d sessions, want 1 to %d (max_connections = %d, plus its leases); all: %v",
			conns["vaultd-node2"], smallPoolSize+5, smallPoolSize, conns)
	}
	lines := sameChain(t, nodes)
	if got := countEvents(lines, "token.refresh", ""); got != 1 {
		t.Errorf("%d token.refresh events, want 1", got)
	}
	if got := countEvents(lines, "proxy.request", "success"); got != n {
		t.Errorf("%d successful proxy.request events in the chain, want %d", got, n)
	}
}

// TestPostgresHAKillDuringRefresh: node B is killed with SIGKILL while its
// refresh is at the provider (held after the provider decided the grant,
// before it answers). B's cross-node lock dies with its session; node A's
// caller then refreshes and gets a usable token, and the rotation A got is
// the one stored: a later refresh on node C succeeds with it.
//
// Rotation is off for B's held call: a provider that rotates on a call
// whose answer never arrives leaves no client able to know the new refresh
// token (RFC 6749 gives it no way to), so that case can only end in
// reauthorization. With rotation off the provider still replaced the
// access token on B's call, so the stored one no longer works upstream and
// only a refresh can serve A's caller.
func TestPostgresHAKillDuringRefresh(t *testing.T) {
	nodes, _ := pgCluster(t, Options{})
	a, b, c := nodes[0], nodes[1], nodes[2]
	a.CreateTenant("acme")
	old := storeExpired(t, a, "crm")
	p := a.Provider
	refBefore := p.RefreshCount()

	p.SetRotation(false)
	entered, release := p.Hold(oauthtest.HoldToken)
	defer release()
	bDone := make(chan error, 1)
	go func() {
		hc := b.HTTP(AppAcme)
		resp, err := hc.Get(b.API + "/v1/integrations/crm/proxy/contacts/1")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			err = fmt.Errorf("B answered %d although it was killed during its refresh", resp.StatusCode)
		}
		bDone <- err
	}()
	waitEntered(t, entered, "node B's refresh")
	b.Kill9()
	if err := <-bDone; err == nil || strings.Contains(err.Error(), "although") {
		t.Fatalf("node B's caller: %v", err)
	}
	release()
	if p.AccessTokenValid(old.AccessToken) || !p.RefreshTokenValid(old.RefreshToken) {
		t.Fatal("test bug: B's held refresh should have replaced the access token and kept the refresh token")
	}

	// A's refresh rotates, and issues a token that is due at once, so the
	// next use (on C) must refresh again with what A stored.
	p.SetRotation(true)
	p.SetExpiresIn(dueSoon)
	hcA := a.HTTP(AppAcme)
	if r := obProxy(t, a, hcA, "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("node A after B was killed: %d %s\n%s", r.Status, r.Body, a.Logs())
	}
	if got := p.RefreshCount() - refBefore; got != 2 {
		t.Fatalf("%d calls to token_url (B's held one and A's), want 2", got)
	}
	if p.RefreshTokenValid(old.RefreshToken) {
		t.Fatal("A's refresh did not rotate the refresh token")
	}
	p.SetExpiresIn(longLived)
	if r := obProxy(t, c, c.HTTP(AppAcme), "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("node C, refreshing with the token A stored: %d %s\n%s", r.Status, r.Body, c.Logs())
	}
	if got := p.RefreshCount() - refBefore; got != 3 {
		t.Fatalf("%d calls to token_url, want 3 (C refreshed with A's rotated token)", got)
	}
	md, err := c.Client(AppAcme).GetIntegration(t.Context(), "crm")
	if err != nil || md.Status != "active" || md.RefreshCount != 2 || md.ConsecutiveFailures != 0 {
		t.Fatalf("integration after the kill: %+v %v, want active, refreshed twice, no failure", md, err)
	}

	// B comes back and serves the same integration and chain.
	b.Start()
	if r := obProxy(t, b, b.HTTP(AppAcme), "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("node B after its restart: %d %s", r.Status, r.Body)
	}
	if got := p.RefreshCount() - refBefore; got != 3 {
		t.Errorf("%d calls to token_url after B's restart, want still 3", got)
	}
	lines := sameChain(t, nodes)
	if got := countEvents(lines, "token.refresh", "success"); got != 2 {
		t.Errorf("%d successful token.refresh events, want 2 (A's and C's; B's never committed)", got)
	}
}

// TestPostgresHAWebhooksOnce: one receiver, the same [[webhooks]] on three
// nodes, and state changes made through all of them: every change is
// delivered, under one webhook-id of its own, signed, however many nodes
// could have sent it. Retries would reuse the id, so the distinct ids
// count the notifications.
func TestPostgresHAWebhooksOnce(t *testing.T) {
	rcv := newHookReceiver(t)
	secretFile, whsec := webhookSecret(t, t.TempDir(), "hook")
	nodes, _ := pgCluster(t, Options{ExtraConfig: webhookConfig(rcv.srv.URL+"/hooks", secretFile, `events = ["integration.*"]`)})
	nodes[0].CreateTenant("acme")

	// 24 connects and 12 disconnects, each through a different node than
	// the one before.
	const connects, disconnects = 24, 12
	want := map[string]bool{} // type/integration
	for i := range connects {
		id := fmt.Sprintf("crm%02d", i)
		nodes[i%3].StoreToken(AppAcme, id)
		want["integration.connected/"+id] = true
	}
	for i := range disconnects {
		id := fmt.Sprintf("crm%02d", i)
		if _, err := nodes[(i+1)%3].Client(AppAcme).DeleteIntegration(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		want["integration.disconnected/"+id] = true
	}
	const n = connects + disconnects

	wh, err := standardwebhooks.NewWebhook(whsec)
	must(t, err)
	// ids maps each webhook-id to the change it announced.
	ids := func() map[string]string {
		out := map[string]string{}
		for _, r := range rcv.requests() {
			var body hookBody
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if err := wh.Verify(r.body, r.header); err != nil {
				t.Fatalf("signature: %v", err)
			}
			out[r.header.Get("webhook-id")] = body.Type + "/" + body.Data["integration_id"]
		}
		return out
	}
	hookWait(t, fmt.Sprintf("%d notifications", n), func() bool { return len(ids()) >= n })
	// Settled: nothing pending on the shared queue, whichever node asks.
	for i, node := range nodes {
		hookWait(t, fmt.Sprintf("no pending delivery (node %d)", i), func() bool {
			var l api.WebhookDeliveryList
			must(t, json.Unmarshal([]byte(adminGet(t, node, "/v1/admin/webhooks/deliveries?status=pending")), &l))
			return len(l.Deliveries) == 0
		})
	}
	got := ids()
	if len(got) != n {
		t.Fatalf("%d distinct webhook-ids for %d changes", len(got), n)
	}
	seen := map[string]string{}
	for id, change := range got {
		if !want[change] {
			t.Errorf("webhook-id %s announced %s, which did not happen", id, change)
		}
		if prev, dup := seen[change]; dup {
			t.Errorf("%s announced twice, as %s and %s", change, prev, id)
		}
		seen[change] = id
	}
	var delivered api.WebhookDeliveryList
	must(t, json.Unmarshal([]byte(adminGet(t, nodes[2], "/v1/admin/webhooks/deliveries?status=delivered")), &delivered))
	if len(delivered.Deliveries) != n {
		t.Errorf("%d deliveries listed as delivered, want %d", len(delivered.Deliveries), n)
	}
	sameChain(t, nodes)
}

// smallPool is a pgNode edit: the node reaches the database with its own
// application_name (so pg_stat_activity tells its sessions apart) and a
// pool of size connections.
func smallPool(t *testing.T, e *Env, db pgtest.Database, appName string, size int) func(string) string {
	t.Helper()
	u, err := url.Parse(db.DSN.Reveal())
	must(t, err)
	q := u.Query()
	q.Set("application_name", appName)
	u.RawQuery = q.Encode()
	dsnPath := filepath.Join(e.Dir, appName+".dsn")
	must(t, os.WriteFile(dsnPath, []byte(u.String()+"\n"), 0o600))
	return func(txt string) string {
		old := fmt.Sprintf("dsn_file = %q\n", filepath.Join(e.Dir, "postgres.dsn"))
		if !strings.Contains(txt, old) {
			t.Fatal("test bug: no dsn_file in the node's config")
		}
		return strings.Replace(txt, old, fmt.Sprintf("dsn_file = %q\nmax_connections = %d\n", dsnPath, size), 1)
	}
}

// pgConnections counts the sessions on db's database by application_name.
func pgConnections(t *testing.T, db pgtest.Database) map[string]int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), db.DSN.Reveal())
	must(t, err)
	defer func() { _ = conn.Close(context.Background()) }()
	rows, err := conn.Query(t.Context(), `SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1`)
	must(t, err)
	out := map[string]int{}
	for rows.Next() {
		var name string
		var n int
		must(t, rows.Scan(&name, &n))
		out[name] = n
	}
	must(t, rows.Err())
	return out
}
