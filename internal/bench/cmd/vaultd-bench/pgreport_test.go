package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
)

func pgTestReport(bbolt, pg time.Duration) *report {
	return &report{
		Duration: time.Second,
		Proxy: map[string]map[int]result{
			"vaultd-h2":        {1: {N: 10, P50: bbolt, RPS: 1000}, 16: {N: 10, P50: bbolt, RPS: 3000}},
			"vaultd-h2-always": {1: {N: 10, P50: 2 * bbolt, RPS: 500}, 16: {N: 10, P50: 2 * bbolt, RPS: 1500}},
		},
		Store: result{N: 10, RPS: 1600},
		Storm: stormResult{Callers: 1000, Refreshes: 1},
		PG: pgReport{
			Server: "PostgreSQL 17, fsync = off, synchronous_commit = off",
			Proxy: map[int]map[int]result{
				1: {1: {N: 10, P50: pg, RPS: 500}, 16: {N: 10, P50: pg, RPS: 600}},
				3: {1: {N: 10, P50: pg, RPS: 400}, 16: {N: 10, P50: pg, RPS: 100}},
			},
			Store:  map[int]result{1: {N: 10, RPS: 600}, 3: {N: 10, RPS: 200}},
			Storm:  map[int]stormResult{1: {Callers: 1000, Refreshes: 1}, 3: {Callers: 1000, Refreshes: 1}},
			Commit: result{N: 100, P50: 100 * time.Microsecond},
		},
	}
}

func TestPGVerdict(t *testing.T) {
	for _, c := range []struct {
		bbolt, pg time.Duration
		met       bool
	}{
		{800 * time.Microsecond, 1200 * time.Microsecond, true}, // exactly 1.5x
		{800 * time.Microsecond, 1201 * time.Microsecond, false},
		{800 * time.Microsecond, 700 * time.Microsecond, true},
	} {
		v, ok := pgTestReport(c.bbolt, c.pg).pgVerdict()
		if !ok {
			t.Fatal("no verdict with PostgreSQL measured")
		}
		if v.Met != c.met {
			t.Errorf("bbolt %s, pg %s: met = %v, want %v (%s)", c.bbolt, c.pg, v.Met, c.met, v.Measured)
		}
		// The floor is bbolt's p50 plus the append transaction's.
		if want := us(c.bbolt + 100*time.Microsecond); !strings.Contains(v.Floor, want) {
			t.Errorf("floor %q lacks %s", v.Floor, want)
		}
	}
	if _, ok := (&report{PG: pgReport{Skipped: "no PostgreSQL"}}).pgVerdict(); ok {
		t.Error("a verdict without PostgreSQL measured")
	}
}

func TestPGMarkdown(t *testing.T) {
	var b bytes.Buffer
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	pgTestReport(800*time.Microsecond, 2000*time.Microsecond).pgMarkdown(w)
	out := b.String()
	for _, want := range []string{"## PostgreSQL", "vaultd on PostgreSQL, 3 nodes", "**not met**", "Floor: ", "fsync = off",
		"### store_token on PostgreSQL", "### Refresh storm on PostgreSQL", "Exactly one refresh and no error on each: **yes**"} {
		if !strings.Contains(out, want) {
			t.Errorf("section lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	(&report{PG: pgReport{Skipped: "no PostgreSQL"}}).pgMarkdown(w)
	if !strings.Contains(b.String(), "Not measured in this run: no PostgreSQL.") {
		t.Errorf("skipped section: %q", b.String())
	}
}

// The admin DSN carries a password: no error may quote it.
func TestPGErrorsHideTheDSN(t *testing.T) {
	const pw = "s3cretPassw0rd"
	for _, dsn := range []string{
		"mysql://bobby:" + pw + "@127.0.0.1/x",                               // refused before connecting
		"postgres://bobby:" + pw + "@127.0.0.1:1/postgres?connect_timeout=1", // nothing listens on port 1
	} {
		_, err := newPGDatabase(context.Background(), secret.NewString(dsn))
		if err == nil {
			t.Fatalf("%s: no error", strings.SplitN(dsn, ":", 2)[0])
		}
		if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "bobby") {
			t.Errorf("error quotes the DSN: %v", err)
		}
	}
	if err := pgErr(errors.New("password " + pw)); strings.Contains(err.Error(), pw) {
		t.Errorf("pgErr kept the message: %v", err)
	}
}
