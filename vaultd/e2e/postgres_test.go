package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vaultd/vaultd/internal/pgtest"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// vaultd on the postgres backend: each test has a fresh database of its own
// (internal/pgtest, on the cluster VAULTD_PG_DSN names; skipped without it
// unless VAULTD_REQUIRE_PG=1). Extra nodes share the first node's database,
// HSM token, PKI and fake provider, as nodes behind a load balancer do.

// pgConfig is e's config with [storage] on PostgreSQL (the DSN in dsnPath).
func pgConfig(t testing.TB, e *Env, dsnPath string) string {
	t.Helper()
	txt := e.ConfigText()
	old := fmt.Sprintf("[storage]\npath = %q\n", e.DBPath)
	if !strings.Contains(txt, old) {
		t.Fatal("test bug: the generated config has no [storage] path")
	}
	return strings.Replace(txt, old, fmt.Sprintf("[storage]\nbackend  = \"postgres\"\ndsn_file = %q\n", dsnPath), 1)
}

// usePostgres switches e (stopped) to the database dsn names and runs
// vaultctl init, which creates the schema.
func usePostgres(t testing.TB, e *Env, dsn secret.String) {
	t.Helper()
	dsnPath := filepath.Join(e.Dir, "postgres.dsn")
	must(t, os.WriteFile(dsnPath, []byte(dsn.Reveal()+"\n"), 0o600))
	must(t, os.WriteFile(e.ConfigPath, []byte(pgConfig(t, e, dsnPath)), 0o600))
	out, err := e.Ctl("init", "-config", e.ConfigPath)
	if err != nil {
		t.Fatalf("vaultctl init on postgres: %v\n%s", err, out)
	}
	if !strings.Contains(out, "PostgreSQL schema at version") {
		t.Fatalf("init did not report the schema:\n%s", out)
	}
}

// newPGEnv starts one vaultd on a fresh database.
func newPGEnv(t *testing.T, opts Options) (*Env, pgtest.Database) {
	t.Helper()
	db := pgtest.New(t) // first: skips before the expensive set-up
	opts.NoStart = true
	e := New(t, opts)
	usePostgres(t, e, db.DSN)
	e.Start()
	return e, db
}

// pgNode is another vaultd (not started) on e's database, HSM token, PKI
// and provider, with ports and an audit mirror of its own; edit, when not
// nil, rewrites its config text.
func pgNode(t testing.TB, e *Env, i int, edit func(string) string) *Env {
	t.Helper()
	n := &Env{t: t, Dir: e.Dir, Vaultd: e.Vaultd, Vaultctl: e.Vaultctl, DBPath: e.DBPath, PINPath: e.PINPath,
		Token: e.Token, KEKLabel: e.KEKLabel, Provider: e.Provider, CA: e.CA, PKIDir: e.PKIDir, JWTKey: e.JWTKey, Opts: e.Opts}
	n.listen, n.opsListen = "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	if e.AuditPath != "" {
		n.AuditPath = filepath.Join(e.Dir, fmt.Sprintf("audit-node%d.jsonl", i))
	}
	n.ConfigPath = filepath.Join(e.Dir, fmt.Sprintf("vaultd-node%d.toml", i))
	txt := pgConfig(t, n, filepath.Join(e.Dir, "postgres.dsn"))
	if edit != nil {
		txt = edit(txt)
	}
	must(t, os.WriteFile(n.ConfigPath, []byte(txt), 0o600))
	t.Cleanup(func() { _ = n.Stop() })
	return n
}

// exportVerified is the node's whole audit export, verified as one chain
// from seq 1.
func exportVerified(t *testing.T, e *Env) []string {
	t.Helper()
	var sb strings.Builder
	if err := e.Client(Auditor).Audit(t.Context(), clientAuditAll(), &sb); err != nil {
		t.Fatal(err)
	}
	res, err := audit.Verify(strings.NewReader(sb.String()))
	if err != nil {
		t.Fatalf("export of %s does not verify: %v", e.API, err)
	}
	if res.Events == 0 || !res.Anchored {
		t.Fatalf("export of %s: %+v, want a chain from seq 1", e.API, res)
	}
	return strings.Split(strings.TrimSpace(sb.String()), "\n")
}

func noPassword(t *testing.T, db pgtest.Database, where, text string) {
	t.Helper()
	if strings.Contains(text, db.Password.Reveal()) {
		t.Fatalf("the database password is in %s", where)
	}
}

// TestPostgresGoldenPath: the main job on the postgres backend, and the
// backup route, which PostgreSQL's own tools replace, answers 503.
func TestPostgresGoldenPath(t *testing.T) {
	e, db := newPGEnv(t, Options{})
	ctx := t.Context()
	e.CreateTenant("acme")
	tok := e.StoreToken(AppAcme, "crm")
	r := obProxy(t, e, e.HTTP(AppAcme), "crm", http.MethodGet, "contacts/1?x=1", nil, nil)
	if r.Status != http.StatusOK || strings.Contains(string(r.Body), tok.AccessToken.Reveal()) {
		t.Fatalf("proxy: %d %s\n%s", r.Status, r.Body, e.Logs())
	}
	md, err := e.Client(AppAcme).GetIntegration(ctx, "crm")
	if err != nil || md.TenantID != "acme" || md.Status != "active" {
		t.Fatalf("metadata %+v %v", md, err)
	}
	lines := exportVerified(t, e)
	for _, a := range []string{`"tenant.create"`, `"token.store"`, `"proxy.request"`} {
		if !strings.Contains(strings.Join(lines, "\n"), a) {
			t.Errorf("audit lacks %s", a)
		}
	}
	if !strings.Contains(e.Logs(), `acts as \"always\"`) {
		t.Error("the batch sync mode on postgres is not logged")
	}
	resp, err := e.HTTP(Operator).Get(e.API + "/v1/admin/backup")
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("backup on postgres: %d, want 503", resp.StatusCode)
	}
	if code, _ := e.OpsGet("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d", code)
	}
	if err := e.Stop(); err != nil {
		t.Fatalf("vaultd did not exit 0: %v\n%s", err, e.Logs())
	}
	noPassword(t, db, "the logs", e.Logs())
	if out, err := e.Ctl("audit", "verify", e.AuditPath); err != nil {
		t.Fatalf("audit verify of the mirror: %v\n%s", err, out)
	}
}

// TestPostgresThreeNodes: three vaultd on one database. A refresh storm
// spread over all three makes exactly one call to token_url; every node
// exports the same single chain, which verifies.
func TestPostgresThreeNodes(t *testing.T) {
	a, _ := newPGEnv(t, Options{})
	b, c := pgNode(t, a, 1, nil), pgNode(t, a, 2, nil)
	b.Start()
	c.Start()
	nodes := []*Env{a, b, c}
	a.CreateTenant("acme")

	a.Provider.SetExpiresIn(dueSoon)
	old := a.StoreToken(AppAcme, "crm")
	a.Provider.SetExpiresIn(longLived)
	a.Provider.SetRefreshDelay(300 * time.Millisecond)
	defer a.Provider.SetRefreshDelay(0)
	refBefore := a.Provider.RefreshCount()
	const n = 60
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		node := nodes[i%3]
		hc := node.HTTP(AppAcme)
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, node.API+"/v1/integrations/crm/proxy/contacts/1", nil)
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
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("caller %d (node %d): status %d\n%s", i, i%3, s, nodes[i%3].Logs())
		}
	}
	if got := a.Provider.RefreshCount() - refBefore; got != 1 {
		t.Fatalf("%d calls to token_url for %d callers on 3 nodes, want exactly 1", got, n)
	}
	if a.Provider.RefreshTokenValid(old.RefreshToken) {
		t.Error("the old refresh token is still valid: it was not rotated")
	}
	refreshes := 0
	var first []string
	for i, node := range nodes {
		lines := exportVerified(t, node)
		if i == 0 {
			first = lines
			for _, l := range lines {
				if strings.Contains(l, `"action":"token.refresh"`) {
					refreshes++
				}
			}
			continue
		}
		// Later exports extend the earlier one: one chain, not three.
		if len(lines) < len(first) || strings.Join(lines[:len(first)], "\n") != strings.Join(first, "\n") {
			t.Fatalf("node %d's export is not the same chain as node 0's", i)
		}
	}
	if refreshes != 1 {
		t.Errorf("%d token.refresh events, want 1", refreshes)
	}
	// Every node committed its own token-use events to the shared chain.
	if got := strings.Count(strings.Join(first, "\n"), `"action":"proxy.request"`); got < n {
		t.Errorf("%d proxy.request events in the chain, want at least %d", got, n)
	}
}

// TestPostgresConnectAcrossNodes: a connect flow whose session is created
// through node A's API is completed by node B (the browser reaches the
// public URL, B's connect listener), and A then serves the integration.
func TestPostgresConnectAcrossNodes(t *testing.T) {
	pgtestDB := pgtest.New(t) // first: skips before the set-up
	c := newConnectEnv(t, connectOptions{})
	must(t, c.Stop())
	// Node A keeps its own connect listener but names B's as public_url:
	// both nodes stand behind one public address.
	aConnect := "127.0.0.1:" + freePort(t)
	_, bPort, _ := net.SplitHostPort(strings.TrimPrefix(c.Public, "https://"))
	usePostgres(t, c.Env, pgtestDB.DSN)
	txt, err := os.ReadFile(c.ConfigPath)
	must(t, err)
	bListen := fmt.Sprintf("listen     = \"127.0.0.1:%s\"", bPort)
	if !strings.Contains(string(txt), bListen) {
		t.Fatal("test bug: no [connect] listen in the config")
	}
	must(t, os.WriteFile(c.ConfigPath, []byte(strings.Replace(string(txt), bListen, fmt.Sprintf("listen     = %q", aConnect), 1)), 0o600))
	c.Start()
	b := pgNode(t, c.Env, 1, nil) // its [connect] listen is the public port
	b.Start()

	c.CreateTenant("acme")
	id, link := c.startSession(t, AppAcme, map[string]any{"integration_id": "crm", "provider": ProviderName, "return_to": connectReturnTo})
	if !strings.HasPrefix(link, c.Public+"/") {
		t.Fatalf("link %s is not on the public URL", link)
	}
	br := c.browser(t)
	_, r := c.connectFlow(t, br, link, true)
	c.returnTo(t, r, connectReturnTo)
	if st, code := c.sessionStatus(t, id); st != "completed" {
		t.Fatalf("session on node A: %s %s\nA:\n%s\nB:\n%s", st, code, c.Logs(), b.Logs())
	}
	res := obProxy(t, c.Env, c.HTTP(AppAcme), "crm", http.MethodGet, "contacts/1", nil, nil)
	if res.Status != http.StatusOK {
		t.Fatalf("proxy on node A after B completed the flow: %d %s", res.Status, res.Body)
	}
	exportVerified(t, b)
}

// pgProxy is a TCP forwarder between vaultd and PostgreSQL that a test
// can cut (every connection dropped, new ones refused) and restore.
type pgProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
}

func newPGProxy(t *testing.T, target string) *pgProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &pgProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { _ = ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *pgProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
		go func() { _, _ = io.Copy(c, u); _ = c.Close() }()
	}
}

func (p *pgProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

func (p *pgProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// TestPostgresUnreachable: with the database gone, calls fail closed with
// 503 and /readyz says 503; when it returns, the node recovers by itself.
// No answer or log line carries the database password.
func TestPostgresUnreachable(t *testing.T) {
	db := pgtest.New(t)
	u, err := url.Parse(db.DSN.Reveal())
	must(t, err)
	proxy := newPGProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	e := New(t, Options{NoStart: true, HSMHealthInterval: "1s"})
	usePostgres(t, e, secret.NewString(u.String()))
	e.Start()
	e.CreateTenant("acme")
	e.StoreToken(AppAcme, "crm")
	hc := e.HTTP(AppAcme)
	if r := obProxy(t, e, hc, "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("proxy before the cut: %d %s", r.Status, r.Body)
	}

	proxy.cut()
	var bodies strings.Builder
	refreshUntil(t, "/readyz 503 with the database away", func() bool {
		code, body := e.OpsGet("/readyz")
		bodies.WriteString(body)
		return code == http.StatusServiceUnavailable
	})
	for _, call := range []func() obResult{
		func() obResult { return obProxy(t, e, hc, "crm", http.MethodGet, "contacts/1", nil, nil) },
		func() obResult { return obDo(t, hc, http.MethodGet, e.API+"/v1/integrations/crm", nil, nil) },
	} {
		r := call()
		if r.Status != http.StatusServiceUnavailable {
			t.Fatalf("with the database away: %d %s, want 503", r.Status, r.Body)
		}
		bodies.Write(r.Body)
	}
	_, opErr := e.Client(Operator).CreateTenant(t.Context(), "globex")
	if opErr == nil {
		t.Fatal("a tenant was created with the database away")
	}
	bodies.WriteString(opErr.Error())

	proxy.restore()
	refreshUntil(t, "/readyz 200 after the database returns", func() bool {
		code, _ := e.OpsGet("/readyz")
		return code == http.StatusOK
	})
	refreshUntil(t, "a proxy call after the database returns", func() bool {
		return obProxy(t, e, hc, "crm", http.MethodGet, "contacts/1", nil, nil).Status == http.StatusOK
	})
	e.CreateTenant("globex")
	exportVerified(t, e)
	must(t, e.Stop())
	noPassword(t, db, "the answers", bodies.String())
	noPassword(t, db, "the logs", e.Logs())
}

// TestPostgresMigrateFromBBolt: a single node's bbolt database, copied by
// vaultctl migrate, serves on postgres with its chain intact and still
// verifying; a second migrate into the now used database is refused.
func TestPostgresMigrateFromBBolt(t *testing.T) {
	db := pgtest.New(t)
	e := New(t, Options{})
	e.CreateTenant("acme")
	e.CreateTenant("globex")
	e.StoreToken(AppAcme, "crm")
	hc := e.HTTP(AppAcme)
	if r := obProxy(t, e, hc, "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("proxy on bbolt: %d %s", r.Status, r.Body)
	}
	before := exportVerified(t, e)
	must(t, e.Stop())

	usePostgres(t, e, db.DSN)
	out, err := e.Ctl("migrate", "-config", e.ConfigPath, "-from-bbolt", e.DBPath)
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if !strings.Contains(out, "copied 2 tenant(s), 1 integration(s)") || !strings.Contains(out, "verified") {
		t.Fatalf("migrate output:\n%s", out)
	}
	noPassword(t, db, "migrate's output", out)
	out, err = e.Ctl("migrate", "-config", e.ConfigPath, "-from-bbolt", e.DBPath)
	if err == nil || !strings.Contains(out, "not empty") {
		t.Fatalf("a second migrate: %v\n%s", err, out)
	}

	e.Start()
	if r := obProxy(t, e, hc, "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("proxy on postgres after the migration: %d %s\n%s", r.Status, r.Body, e.Logs())
	}
	after := exportVerified(t, e)
	// The bbolt chain is the start of the postgres one, byte for byte
	// (the bbolt export's own audit.read included).
	if len(after) <= len(before) || strings.Join(after[:len(before)], "\n") != strings.Join(before, "\n") {
		t.Fatalf("the migrated chain does not start with the bbolt one (%d then %d lines)", len(before), len(after))
	}
	must(t, e.Stop())
	if out, err := e.Ctl("audit", "verify", e.AuditPath); err != nil {
		t.Fatalf("audit verify of the mirror across the migration: %v\n%s", err, out)
	}
}
