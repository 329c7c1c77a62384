// Package pgtest gives each test a fresh PostgreSQL database of its own,
// on the cluster VAULTD_PG_DSN names (a role allowed to create roles and
// databases; scripts/pg.sh starts a throwaway cluster and sets it).
//
// Each database is owned by a new role that is neither superuser nor
// BYPASSRLS, as vaultd's role must be, so row-level security applies to
// the tests. Both are dropped when the test ends.
//
// Without VAULTD_PG_DSN the test is skipped, unless VAULTD_REQUIRE_PG=1
// (scripts/test.sh sets it): then it fails, so CI never skips silently.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vaultd/vaultd/internal/secret"
)

// AdminDSN returns VAULTD_PG_DSN, skipping (or, under VAULTD_REQUIRE_PG,
// failing) the test without it.
func AdminDSN(t testing.TB) secret.String {
	t.Helper()
	dsn := os.Getenv("VAULTD_PG_DSN")
	if dsn == "" {
		if os.Getenv("VAULTD_REQUIRE_PG") == "1" {
			t.Fatal("VAULTD_PG_DSN is not set and VAULTD_REQUIRE_PG=1: run under scripts/test.sh or source scripts/pg.sh")
		}
		t.Skip("no PostgreSQL: VAULTD_PG_DSN is not set (scripts/pg.sh up starts one)")
	}
	return secret.NewString(dsn)
}

// Database is one test's database.
type Database struct {
	// DSN connects as the database's owner (a password login on the
	// admin DSN's host and port).
	DSN secret.String
	// Name and Role name the database and its owner.
	Name, Role string
	// Password is the owner's password, for tests that look for it.
	Password secret.String
}

func random(t testing.TB) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// New creates a database and its owning role, dropped at the test's end.
// The admin DSN must be a postgres:// URL.
func New(t testing.TB) Database {
	t.Helper()
	admin := AdminDSN(t)
	u, err := url.Parse(admin.Reveal())
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatal("VAULTD_PG_DSN must be a postgres:// URL")
	}
	id := random(t)
	db := Database{Name: "vaultd_t_" + id, Role: "vaultd_r_" + id}
	pw := random(t) + random(t)
	db.Password = secret.NewString(pw)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exec(ctx, t, admin,
		`CREATE ROLE `+db.Role+` LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '`+pw+`'`,
		`CREATE DATABASE `+db.Name+` OWNER `+db.Role)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		exec(ctx, t, admin, `DROP DATABASE IF EXISTS `+db.Name+` WITH (FORCE)`, `DROP ROLE IF EXISTS `+db.Role)
	})
	own := *u
	own.User = url.UserPassword(db.Role, pw)
	own.Path = "/" + db.Name
	db.DSN = secret.NewString(own.String())
	return db
}

// exec runs admin statements (names are generated, never user input).
func exec(ctx context.Context, t testing.TB, admin secret.String, stmts ...string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, admin.Reveal())
	if err != nil {
		t.Fatalf("pgtest: connect to VAULTD_PG_DSN: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
}
