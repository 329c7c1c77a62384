package postgres_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vaultd/vaultd/internal/pgtest"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/postgres"
	"github.com/vaultd/vaultd/storage/storagetest"
)

func rawConn(t *testing.T, dsn secret.String) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), dsn.Reveal())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// TestMigrateIdempotentAndConcurrent: nodes migrating at once apply each
// migration once; running it again changes nothing.
func TestMigrateIdempotentAndConcurrent(t *testing.T) {
	db := pgtest.New(t)
	var stores []*postgres.Store
	for range 4 {
		s, err := postgres.Open(t.Context(), db.DSN, postgres.Options{ForMigration: true})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		stores = append(stores, s)
	}
	if err := stores[0].Ping(t.Context()); !errors.Is(err, storage.ErrSchema) {
		t.Fatalf("Ping before Migrate: %v, want ErrSchema", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(stores))
	for i, s := range stores {
		wg.Go(func() { errs[i] = s.Migrate(t.Context()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate %d: %v", i, err)
		}
	}
	if err := stores[0].Migrate(t.Context()); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	var n, maxV int
	if err := rawConn(t, db.DSN).QueryRow(t.Context(), `SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &maxV); err != nil {
		t.Fatal(err)
	}
	if n != postgres.SchemaVersion || maxV != postgres.SchemaVersion {
		t.Fatalf("schema_migrations has %d rows up to %d, want %d", n, maxV, postgres.SchemaVersion)
	}
	if err := stores[1].Ping(t.Context()); err != nil {
		t.Fatalf("Ping after Migrate: %v", err)
	}
	// A plain Open now accepts the database.
	s, err := postgres.Open(t.Context(), db.DSN, postgres.Options{})
	if err != nil {
		t.Fatalf("Open after Migrate: %v", err)
	}
	_ = s.Close()
}

// TestSchemaNewer: a database migrated by a newer binary is refused by
// Open, Ping and Migrate alike.
func TestSchemaNewer(t *testing.T) {
	s, db := openNew(t, postgres.Options{})
	if _, err := rawConn(t, db.DSN).Exec(t.Context(), `INSERT INTO schema_migrations (version) VALUES ($1)`, postgres.SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); !errors.Is(err, storage.ErrSchema) {
		t.Fatalf("Ping: %v, want ErrSchema", err)
	}
	if err := s.Migrate(t.Context()); !errors.Is(err, storage.ErrSchema) {
		t.Fatalf("Migrate: %v, want ErrSchema", err)
	}
	for _, o := range []postgres.Options{{}, {ForMigration: true}} {
		if _, err := postgres.Open(t.Context(), db.DSN, o); !errors.Is(err, storage.ErrSchema) {
			t.Fatalf("Open(%+v): %v, want ErrSchema", o, err)
		}
	}
}

// TestOpenUnmigrated: an empty database tells the operator to run
// vaultctl init.
func TestOpenUnmigrated(t *testing.T) {
	db := pgtest.New(t)
	_, err := postgres.Open(t.Context(), db.DSN, postgres.Options{})
	if !errors.Is(err, postgres.ErrNotMigrated) || !strings.Contains(err.Error(), "vaultctl init") {
		t.Fatalf("Open of an empty database: %v, want ErrNotMigrated naming vaultctl init", err)
	}
}

// TestNoPasswordInErrors: a wrong password, an unparsable DSN and an
// unreachable server all fail without the password in the error.
func TestNoPasswordInErrors(t *testing.T) {
	db := pgtest.New(t)
	u, err := url.Parse(db.DSN.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	const pw = "s3cr3t-Pa55w0rd-never-shown"
	wrong := *u
	wrong.User = url.UserPassword(db.Role, pw)
	dead := wrong
	dead.Host = deadAddr(t)
	o := postgres.Options{ConnectTimeout: time.Second, AcquireTimeout: 2 * time.Second}
	for name, dsn := range map[string]string{
		"wrong password": wrong.String(),
		"unreachable":    dead.String(),
		"unparsable":     "postgres://" + db.Role + ":" + pw + "@127.0.0.1:notaport/x",
		"keyword form":   "host=127.0.0.1 port=notaport password=" + pw,
	} {
		_, err := postgres.Open(t.Context(), secret.NewString(dsn), o)
		if err == nil {
			t.Fatalf("%s: Open succeeded", name)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("%s: the error shows the password: %v", name, err)
		}
		if name == "unreachable" && !errors.Is(err, postgres.ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", name, err)
		}
	}
}

// deadAddr is a 127.0.0.1 address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// proxy forwards TCP to the database until down() makes it a black hole:
// existing connections are cut, new ones accepted and never answered.
type proxy struct {
	l      net.Listener
	target string
	down   atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	t.Cleanup(func() { _ = l.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *proxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.track(c)
		if p.down.Load() {
			continue // held open, never answered
		}
		go func() {
			b, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				return
			}
			p.track(b)
			go func() { _, _ = io.Copy(b, c); _ = b.Close() }()
			_, _ = io.Copy(c, b)
			_ = c.Close()
		}()
	}
}

// TestUnreachableFailsFastAndRecovers: while the database does not answer,
// calls fail with ErrUnavailable within the store's own timeouts (the
// test's context has no deadline); once it answers again the pool serves.
func TestUnreachableFailsFastAndRecovers(t *testing.T) {
	db := pgtest.New(t)
	u, err := url.Parse(db.DSN.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, u.Host)
	u.Host = p.l.Addr().String()
	dsn := secret.NewString(u.String())
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{
		ForMigration: true, ConnectTimeout: 300 * time.Millisecond, AcquireTimeout: 500 * time.Millisecond,
		StatementTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if _, err := storagetest.NoEvent(s).CreateTenant(context.Background(), storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}

	p.down.Store(true)
	p.cut()
	for i := range 3 {
		_, err := s.GetTenant(context.Background(), "acme")
		if !errors.Is(err, postgres.ErrUnavailable) {
			t.Fatalf("GetTenant %d while down: %v, want ErrUnavailable", i, err)
		}
		if strings.Contains(err.Error(), db.Password.Reveal()) {
			t.Fatalf("the error shows the password: %v", err)
		}
	}
	if err := s.Ping(context.Background()); !errors.Is(err, postgres.ErrUnavailable) {
		t.Fatalf("Ping while down: %v, want ErrUnavailable", err)
	}

	p.down.Store(false)
	p.cut() // the black-holed connections
	var got error
	for range 3 { // a pooled connection may die on first use after the cut
		if _, got = s.GetTenant(context.Background(), "acme"); got == nil {
			break
		}
	}
	if got != nil {
		t.Fatalf("GetTenant after the database came back: %v", got)
	}
	if _, err := storagetest.NoEvent(s).CreateTenant(context.Background(), storagetest.NewTenant("beta")); err != nil {
		t.Fatalf("CreateTenant after recovery: %v", err)
	}
}

// TestRowLevelSecurity: the role vaultd uses (no superuser, no BYPASSRLS)
// sees no tenant's integrations or sessions without vaultd.tenant, and
// only that tenant's with it, even in a statement that names no tenant.
func TestRowLevelSecurity(t *testing.T) {
	s, db := openNew(t, postgres.Options{})
	ctx := t.Context()
	for _, id := range []string{"acme", "beta"} {
		if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant(id)); err != nil {
			t.Fatal(err)
		}
		if _, err := storagetest.NoEvent(s).PutIntegration(ctx, id, storagetest.NewIntegration(id, "crm", 16)); err != nil {
			t.Fatal(err)
		}
		if _, err := storagetest.NoEvent(s).CreateConnectSession(ctx, storagetest.NewConnectSession(id, "cs-1")); err != nil {
			t.Fatal(err)
		}
	}
	c := rawConn(t, db.DSN)
	count := func(table string) (int, error) {
		var n int
		err := c.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n)
		return n, err
	}
	for _, table := range []string{"integrations", "connect_sessions"} {
		if n, err := count(table); err == nil && n != 0 {
			t.Fatalf("%s without vaultd.tenant: %d rows visible", table, n)
		}
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT set_config('vaultd.tenant', 'acme', true)`); err != nil {
		t.Fatal(err)
	}
	var tenants []string
	rows, err := tx.Query(ctx, `SELECT DISTINCT tenant_id FROM integrations UNION SELECT DISTINCT tenant_id FROM connect_sessions`)
	if err != nil {
		t.Fatal(err)
	}
	if tenants, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(tenants) != 1 || tenants[0] != "acme" {
		t.Fatalf("with vaultd.tenant=acme the rows of %v are visible", tenants)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO integrations (tenant_id, id, record, revision) VALUES ('beta', 'x', '{}', 1)`); err == nil {
		t.Fatal("a write for tenant beta under vaultd.tenant=acme was allowed")
	}
}

// TestAuditDataByteExact: audit events come back as written, whitespace
// and key order included (text, not jsonb).
func TestAuditDataByteExact(t *testing.T) {
	s, _ := openNew(t, postgres.Options{})
	data := []byte(`{"seq":1,  "zeta":"\u00e9", "alpha":[1, 2], "hash":"h1"}` + "\n")
	if _, err := s.AppendAudit(t.Context(), func(storage.AuditHead) (storage.AuditRecord, error) {
		return storage.AuditRecord{Seq: 1, Hash: "h1", Data: data}, nil
	}); err != nil {
		t.Fatal(err)
	}
	var got []byte
	if err := s.ScanAudit(t.Context(), 0, func(r storage.AuditRecord) (bool, error) { got = r.Data; return true, nil }); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(data) {
		t.Fatalf("ScanAudit data %q, want %q", got, data)
	}
	bad := []byte("{\"seq\":2,\"hash\":\"h2\",\"x\":\"\xff\"}")
	if _, err := s.AppendAudit(t.Context(), func(storage.AuditHead) (storage.AuditRecord, error) {
		return storage.AuditRecord{Seq: 2, Hash: "h2", Data: bad}, nil
	}); !errors.Is(err, storage.ErrInvalidRecord) {
		t.Fatalf("AppendAudit of non-UTF-8 data: %v, want ErrInvalidRecord", err)
	}
}

func FuzzParseMigrationName(f *testing.F) {
	for _, s := range []string{"0001_init.sql", "0002_add_x.sql", "0000_zero.sql", "1_init.sql", "0001_.sql", "0001_Init.sql", "0001_init.txt", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		v, err := postgres.ParseMigrationName(name)
		if err != nil {
			return
		}
		if v < 1 || v > 9999 || !strings.HasSuffix(name, ".sql") || len(name) < len("0001_x.sql") {
			t.Fatalf("ParseMigrationName(%q) = %d", name, v)
		}
	})
}
