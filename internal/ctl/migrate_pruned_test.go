package ctl

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/internal/pgtest"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/storage/inmem"
	"github.com/vaultd/vaultd/storage/postgres"
)

// prunedSource is sourceDB with its first 100 events pruned (retention).
func prunedSource(t *testing.T) (*bolt.Store, storage.AuditHead) {
	t.Helper()
	src := sourceDB(t)
	if n, err := src.PruneAudit(t.Context(), 100, 1000); err != nil || n != 100 {
		t.Fatalf("PruneAudit = %d, %v", n, err)
	}
	anchor, err := src.AuditAnchor(t.Context())
	if err != nil || anchor.Seq != 100 {
		t.Fatalf("anchor = %+v, %v", anchor, err)
	}
	return src, anchor
}

// checkPrunedCopy: dst holds src's remaining chain byte for byte, starts
// at the same anchor, and `audit verify -from-anchor` accepts its export.
func checkPrunedCopy(t *testing.T, src, dst storage.Store, anchor storage.AuditHead, n migrateCounts) {
	t.Helper()
	ctx := t.Context()
	if n.events != 205 || n.tenants != 2 || n.integrations != 1 {
		t.Errorf("counts = %+v, want 205 events from seq 101", n)
	}
	if got, err := dst.AuditAnchor(ctx); err != nil || got != anchor {
		t.Fatalf("target anchor = %+v, %v; want %+v", got, err, anchor)
	}
	sh, _ := src.AuditHead(ctx)
	if dh, err := dst.AuditHead(ctx); err != nil || dh != sh {
		t.Fatalf("target head = %+v, %v; want %+v", dh, err, sh)
	}
	a, b := scanAll(t, src), scanAll(t, dst)
	if len(b) != 205 || b[0].Seq != 101 || !reflect.DeepEqual(a, b) {
		t.Fatalf("chains differ: source %d records, target %d from seq %d", len(a), len(b), b[0].Seq)
	}
	var lines []string
	for _, r := range b {
		lines = append(lines, string(bytes.TrimRight(r.Data, "\n")))
	}
	f := writeLines(t, lines, 0, len(lines))
	out, err := runVerify("-from-anchor", fmt.Sprintf("%d:%s", anchor.Seq, anchor.Hash), f)
	wantVerifyOK(t, out, err, 205, 305)
	// Without the anchor the copy is not a chain from genesis.
	out, err = runVerify(f)
	if err == nil {
		t.Fatalf("verify of the copy without -from-anchor passed: %s", out)
	}
	// The next event continues the chain after the copied head.
	if _, err := dst.AppendAudit(ctx, func(h storage.AuditHead) (storage.AuditRecord, error) {
		return storage.AuditRecord{Seq: 1, Hash: "x", Data: []byte(`{"seq":1,"hash":"x"}`)}, nil
	}); err == nil {
		t.Fatal("the target accepted seq 1 after an imported chain")
	}
}

// A pruned chain is copied from its anchor into a target that can import it.
func TestMigratePrunedChain(t *testing.T) {
	src, anchor := prunedSource(t)
	dst := inmem.New()
	n, err := migrate(t.Context(), src, dst, func() time.Time { return migrateNow })
	if err != nil {
		t.Fatal(err)
	}
	checkPrunedCopy(t, src, dst, anchor, n)
}

// noImporter hides the target's optional ImportAuditAnchor.
type noImporter struct{ migrateTarget }

// A target without the capability is refused before anything is written.
func TestMigratePrunedNeedsImporter(t *testing.T) {
	src, _ := prunedSource(t)
	inner := inmem.New()
	_, err := migrate(t.Context(), src, noImporter{inner}, time.Now)
	if err == nil || !strings.Contains(err.Error(), "pruned (anchor seq 100)") || !strings.Contains(err.Error(), "ImportAuditAnchor") {
		t.Fatalf("err = %v, want a refusal naming the anchor and the missing capability", err)
	}
	if h, _ := inner.AuditHead(t.Context()); h.Seq != 0 {
		t.Fatal("the refused migration wrote audit events")
	}
	if ts, _ := inner.ListTenants(t.Context()); len(ts) != 0 {
		t.Fatal("the refused migration wrote tenants")
	}
}

// The same into PostgreSQL: the shared store starts its chain at the
// bbolt file's anchor and verifies from it.
func TestMigratePrunedChainToPostgres(t *testing.T) {
	db := pgtest.New(t)
	dst, err := postgres.Open(t.Context(), db.DSN, postgres.Options{ForMigration: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Close() })
	if err := dst.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	src, anchor := prunedSource(t)
	n, err := migrate(t.Context(), src, dst, func() time.Time { return migrateNow })
	if err != nil {
		t.Fatal(err)
	}
	checkPrunedCopy(t, src, dst, anchor, n)
	// A second run finds the target not empty.
	if _, err := migrate(t.Context(), src, dst, time.Now); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("second migrate: %v, want a refusal", err)
	}
}
