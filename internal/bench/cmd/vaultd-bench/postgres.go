package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/client"
)

// pgReport is vaultd on PostgreSQL, measured in the same run as the bbolt
// vaultd: one node, then three on the same database.
type pgReport struct {
	Skipped string                 // why nothing was measured, or ""
	Server  string                 // server_version, fsync, synchronous_commit
	Proxy   map[int]map[int]result // nodes -> callers -> result
	Store   map[int]result         // nodes -> store_token at 16 writers
	Storm   map[int]stormResult    // nodes -> refresh storm
	// Commit is the floor of an audited request's database work: the
	// transaction of one chained audit append, on one connection.
	Commit result
}

// pgDatabase is a fresh database owned by a fresh role that is neither
// superuser nor BYPASSRLS, as vaultd's role must be (operations.md §19).
type pgDatabase struct {
	dsn  secret.String
	drop func()
}

// newPGDatabase creates it on the cluster admin (a postgres:// URL of a
// role allowed to create roles and databases) names.
func newPGDatabase(ctx context.Context, admin secret.String) (pgDatabase, error) {
	u, err := url.Parse(admin.Reveal())
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		// The URL may hold a password: never quote it.
		return pgDatabase{}, fmt.Errorf("postgres: the admin DSN must be a postgres:// URL")
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return pgDatabase{}, err
	}
	id, pw := hex.EncodeToString(b[:8]), hex.EncodeToString(b[8:])
	name, role := "vaultd_bench_"+id, "vaultd_bench_r_"+id
	if err := pgExec(ctx, admin,
		`CREATE ROLE `+role+` LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '`+pw+`'`,
		`CREATE DATABASE `+name+` OWNER `+role); err != nil {
		return pgDatabase{}, fmt.Errorf("postgres: create the bench database: %w", err)
	}
	own := *u
	own.User = url.UserPassword(role, pw)
	own.Path = "/" + name
	return pgDatabase{dsn: secret.NewString(own.String()), drop: func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = pgExec(ctx, admin, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`, `DROP ROLE IF EXISTS `+role)
	}}, nil
}

func pgExec(ctx context.Context, dsn secret.String, stmts ...string) error {
	c, err := pgx.Connect(ctx, dsn.Reveal())
	if err != nil {
		return pgErr(err)
	}
	defer c.Close(ctx)
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			return pgErr(err)
		}
	}
	return nil
}

// pgErr keeps only the error's kind: pgx's connect errors can quote the
// connection string's host and user, and a statement error could echo
// CREATE ROLE's password.
func pgErr(err error) error {
	return fmt.Errorf("postgres: %T", err)
}

// pgServer describes the cluster: the figures mean little without its
// durability settings.
func pgServer(ctx context.Context, dsn secret.String) (string, error) {
	c, err := pgx.Connect(ctx, dsn.Reveal())
	if err != nil {
		return "", pgErr(err)
	}
	defer c.Close(ctx)
	var ver, fsync, sc string
	if err := c.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit')`).Scan(&ver, &fsync, &sc); err != nil {
		return "", pgErr(err)
	}
	return fmt.Sprintf("PostgreSQL %s, fsync = %s, synchronous_commit = %s", ver, fsync, sc), nil
}

// pgCommitFloor times the shape of one audited write in storage/postgres,
// from one connection: BEGIN, lock the chain's head row FOR UPDATE, INSERT
// a proxy.request-sized event (530 bytes), move the head, COMMIT. It is
// the least any call vaultd audits on PostgreSQL pays for its database
// work, five round trips, without vaultd's own code.
func pgCommitFloor(ctx context.Context, dsn secret.String, d time.Duration, maxN int) (result, error) {
	c, err := pgx.Connect(ctx, dsn.Reveal())
	if err != nil {
		return result{}, pgErr(err)
	}
	defer c.Close(ctx)
	for _, q := range []string{
		`CREATE TABLE bench_head (seq bigint NOT NULL, hash text NOT NULL)`,
		`INSERT INTO bench_head VALUES (0, '')`,
		`CREATE TABLE bench_events (seq bigint PRIMARY KEY, hash text NOT NULL, data text NOT NULL)`,
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			return result{}, pgErr(err)
		}
	}
	data := randToken(530)
	hash := randToken(64)
	var lat []time.Duration
	deadline := time.Now().Add(d)
	start := time.Now()
	for len(lat) < maxN && time.Now().Before(deadline) {
		t0 := time.Now()
		if err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			var seq int64
			var h string
			if err := tx.QueryRow(ctx, `SELECT seq, hash FROM bench_head FOR UPDATE`).Scan(&seq, &h); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO bench_events (seq, hash, data) VALUES ($1, $2, $3)`, seq+1, string(hash), string(data)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `UPDATE bench_head SET seq = $1, hash = $2`, seq+1, string(hash))
			return err
		}); err != nil {
			return result{}, pgErr(err)
		}
		lat = append(lat, time.Since(t0))
	}
	r := summarize(lat)
	r.Name, r.Callers, r.Elapsed = "pg-append", 1, time.Since(start)
	r.RPS = float64(r.N) / r.Elapsed.Seconds()
	return r, nil
}

// pgBench measures vaultd on PostgreSQL: one node, then three nodes on the
// same database and SoftHSM token (as behind a load balancer: the load is
// spread over them round robin), each at 1 and 16 callers over HTTP/2, then
// store_token and the refresh storm on one and on three nodes.
func pgBench(ctx context.Context, o options, dir string, p *pki, up *upstream, appTLS, opTLS *tls.Config) (pg pgReport, err error) {
	pg = pgReport{Proxy: map[int]map[int]result{}, Store: map[int]result{}, Storm: map[int]stormResult{}}
	db, err := newPGDatabase(ctx, secret.NewString(o.pgDSN))
	if err != nil {
		return pg, err
	}
	defer db.drop()
	if pg.Server, err = pgServer(ctx, db.dsn); err != nil {
		return pg, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return pg, err
	}
	dsnFile := filepath.Join(dir, "postgres.dsn")
	if err := os.WriteFile(dsnFile, []byte(db.dsn.Reveal()+"\n"), 0o600); err != nil {
		return pg, err
	}
	v, err := setupVaultdOn(dir, o.binDir, p, up, "batch", fmt.Sprintf("backend  = \"postgres\"\ndsn_file = %q", dsnFile))
	if err != nil {
		return pg, err
	}
	nodes := []*vaultd{v}
	for i := 1; i < 3; i++ {
		n, err := v.node(i)
		if err != nil {
			return pg, err
		}
		nodes = append(nodes, n)
	}
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "vaultd on postgres logs:", dir, "(kept with -keep)")
		}
	}()
	if err := v.start(); err != nil {
		return pg, err
	}
	if err := seedVaultd(ctx, v, up, appTLS, opTLS); err != nil {
		return pg, err
	}
	app, err := client.New(v.api, client.Options{TLSConfig: appTLS})
	if err != nil {
		return pg, err
	}
	h2 := func() *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: appTLS.Clone(), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64,
		}}
	}
	measure := func(ns []*vaultd) error {
		c := h2()
		defer c.CloseIdleConnections()
		var rr atomic.Int64
		mk := func() (*http.Request, error) {
			n := ns[int(rr.Add(1))%len(ns)]
			return http.NewRequest(http.MethodGet, n.api+"/v1/integrations/hot/proxy/contacts/0031000000abcDE", nil)
		}
		if err := warm(c, mk, o.warmup*len(ns)); err != nil {
			return fmt.Errorf("warm-up on %d postgres node(s): %w", len(ns), err)
		}
		pg.Proxy[len(ns)] = map[int]result{}
		for _, callers := range []int{1, 16} {
			r := run(ctx, "vaultd-pg", c, mk, callers, o.duration, 200000)
			pg.Proxy[len(ns)][callers] = r
			fmt.Printf("%-16s %7d %9s %9s %10.0f %6d\n", fmt.Sprintf("vaultd-pg-%dnode", len(ns)), callers,
				r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.RPS, r.Errors)
			if r.Errors > 0 {
				return fmt.Errorf("postgres, %d node(s), %d callers: %d errors, first: %s", len(ns), callers, r.Errors, r.FirstEr)
			}
		}
		apis := make([]string, len(ns))
		for i, n := range ns {
			apis[i] = n.api
		}
		st := storeTokensOn(ctx, apis, fmt.Sprintf("pg%d", len(ns)), c, up, 16, o.duration)
		pg.Store[len(ns)] = st
		fmt.Printf("postgres, %d node(s): store_token 16 writers: %.0f req/s p50 %s p99 %s errors %d\n", len(ns),
			st.RPS, st.P50.Round(time.Microsecond), st.P99.Round(time.Microsecond), st.Errors)
		if st.Errors > 0 {
			return fmt.Errorf("postgres store_token: %d errors, first: %s", st.Errors, st.FirstEr)
		}
		sr, err := stormOn(ctx, apis, fmt.Sprintf("storm-pg%d", len(ns)), up, app, o.storm, o.stormLatency)
		if err != nil {
			return fmt.Errorf("postgres storm: %w", err)
		}
		pg.Storm[len(ns)] = sr
		fmt.Printf("postgres, %d node(s): storm: %d callers -> %d refresh(es), %d errors %s, p50 %s p99 %s\n", len(ns),
			sr.Callers, sr.Refreshes, sr.Errors, sr.FirstErr, sr.P50.Round(time.Microsecond), sr.P99.Round(time.Microsecond))
		return nil
	}
	if err := measure(nodes[:1]); err != nil {
		return pg, err
	}
	for _, n := range nodes[1:] {
		if err := n.start(); err != nil {
			return pg, err
		}
	}
	if err := measure(nodes); err != nil {
		return pg, err
	}
	if pg.Commit, err = pgCommitFloor(ctx, db.dsn, o.duration, 20000); err != nil {
		return pg, err
	}
	fmt.Printf("postgres: one audit append's transaction (5 round trips), 1 connection: p50 %s p99 %s\n",
		pg.Commit.P50.Round(time.Microsecond), pg.Commit.P99.Round(time.Microsecond))
	return pg, nil
}
