package storagetest

import (
	"context"
	"errors"
	"testing"

	"github.com/vaultd/vaultd/storage"
)

// testAuditAnchorImport: an empty chain can start at an imported anchor
// (the copy of a pruned chain); the next event must continue it, and a
// chain that ever held or pruned anything refuses the import.
func testAuditAnchorImport(t *testing.T, s storage.Store) {
	ctx := context.Background()
	imp, ok := s.(storage.AuditAnchorImporter)
	if !ok {
		t.Skip("the store has no ImportAuditAnchor (optional storage.AuditAnchorImporter)")
	}
	// A second store's pruned chain supplies a real anchor and the events
	// after it.
	var src []storage.AuditRecord
	head := storage.AuditHead{Hash: storage.GenesisHash}
	for range 12 {
		r, err := ChainBuilder(`"action":"token.store"`)(head)
		if err != nil {
			t.Fatal(err)
		}
		src = append(src, r)
		head = storage.AuditHead{Seq: r.Seq, Hash: r.Hash}
	}
	anchor := storage.AuditHead{Seq: src[6].Seq, Hash: src[6].Hash}

	for name, bad := range map[string]storage.AuditHead{
		"seq 0":   {Seq: 0, Hash: storage.GenesisHash},
		"no hash": {Seq: 7},
	} {
		if err := imp.ImportAuditAnchor(ctx, bad); !errors.Is(err, storage.ErrInvalidRecord) {
			t.Fatalf("ImportAuditAnchor(%s): %v, want ErrInvalidRecord", name, err)
		}
	}
	if err := imp.ImportAuditAnchor(ctx, anchor); err != nil {
		t.Fatalf("ImportAuditAnchor on an empty chain: %v", err)
	}
	if got := must[storage.AuditHead](t, "AuditAnchor")(s.AuditAnchor(ctx)); got != anchor {
		t.Fatalf("AuditAnchor = %+v, want %+v", got, anchor)
	}
	if got := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx)); got != anchor {
		t.Fatalf("AuditHead = %+v, want %+v", got, anchor)
	}
	// Once set it is not set again, not even to the same value.
	if err := imp.ImportAuditAnchor(ctx, anchor); !errors.Is(err, storage.ErrInvalidRecord) {
		t.Fatalf("second ImportAuditAnchor: %v, want ErrInvalidRecord", err)
	}
	// The next event is anchor.Seq+1 and nothing else.
	if _, err := s.AppendAudit(ctx, func(storage.AuditHead) (storage.AuditRecord, error) { return src[0], nil }); !errors.Is(err, storage.ErrInvalidRecord) {
		t.Fatalf("AppendAudit of seq 1 after an anchor at 7: %v, want ErrInvalidRecord", err)
	}
	for _, r := range src[7:] {
		got, err := s.AppendAudit(ctx, func(h storage.AuditHead) (storage.AuditRecord, error) {
			if h.Seq+1 != r.Seq {
				t.Errorf("AuditFunc got head %d, want %d", h.Seq, r.Seq-1)
			}
			return r, nil
		})
		if err != nil || got.Seq != r.Seq {
			t.Fatalf("AppendAudit seq %d: %+v, %v", r.Seq, got, err)
		}
	}
	var scanned []storage.AuditRecord
	if err := s.ScanAudit(ctx, 0, func(r storage.AuditRecord) (bool, error) {
		scanned = append(scanned, r)
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(scanned) != 5 || scanned[0].Seq != 8 || scanned[4].Hash != src[11].Hash || string(scanned[0].Data) != string(src[7].Data) {
		t.Fatalf("ScanAudit after the anchor returned %d records from seq %d", len(scanned), first(scanned))
	}
	if got := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx)); got != head {
		t.Fatalf("AuditHead = %+v, want %+v", got, head)
	}
	// Pruning works on the imported chain as on any other.
	if p, ok := s.(storage.AuditPruner); ok {
		if n := must[int](t, "PruneAudit")(p.PruneAudit(ctx, 9, 100)); n != 2 {
			t.Fatalf("PruneAudit(9) = %d, want 2", n)
		}
		if got := must[storage.AuditHead](t, "AuditAnchor")(s.AuditAnchor(ctx)); got.Seq != 9 || got.Hash != src[8].Hash {
			t.Fatalf("anchor after pruning = %+v", got)
		}
	}
	if err := imp.ImportAuditAnchor(ctx, head); !errors.Is(err, storage.ErrInvalidRecord) {
		t.Fatalf("ImportAuditAnchor on a chain with events: %v, want ErrInvalidRecord", err)
	}
}

func first(recs []storage.AuditRecord) uint64 {
	if len(recs) == 0 {
		return 0
	}
	return recs[0].Seq
}

// Refused on a chain that holds events (never imported).
func testAuditAnchorImportNotEmpty(t *testing.T, s storage.Store) {
	imp, ok := s.(storage.AuditAnchorImporter)
	if !ok {
		t.Skip("the store has no ImportAuditAnchor (optional storage.AuditAnchorImporter)")
	}
	recs := appendN(t, s, 3)
	before := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(context.Background()))
	err := imp.ImportAuditAnchor(context.Background(), storage.AuditHead{Seq: 10, Hash: recs[2].Hash})
	if !errors.Is(err, storage.ErrInvalidRecord) {
		t.Fatalf("ImportAuditAnchor after 3 events: %v, want ErrInvalidRecord", err)
	}
	if got := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(context.Background())); got != before {
		t.Fatalf("a refused import moved the head to %+v", got)
	}
	if got := must[storage.AuditHead](t, "AuditAnchor")(s.AuditAnchor(context.Background())); got.Seq != 0 {
		t.Fatalf("a refused import set the anchor to %+v", got)
	}
}
