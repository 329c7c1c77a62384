package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/hsm/hsmtest"
	"github.com/vaultd/vaultd/storage/bolt"
)

// verifyFiles checks files (then extra) as one chain, as vaultctl audit
// verify does.
func verifyFiles(t *testing.T, files []string, extra []byte) (VerifyResult, error) {
	t.Helper()
	var v Verifier
	for _, f := range files {
		if err := v.AddReader(bytes.NewReader(readFile(t, f))); err != nil {
			return v.Result(), err
		}
	}
	err := v.AddReader(bytes.NewReader(extra))
	return v.Result(), err
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return m // lexical order is chain order
}

// Old events are archived as a segment, then pruned; the segments and
// what remains verify as one chain from seq 1, and each run that pruned
// records one audit.prune event.
func TestRetentionArchivesThenPrunes(t *testing.T) {
	dir := t.TempDir()
	store := openBolt(t, filepath.Join(dir, "vault.db"))
	c := newClock()
	l := newTestLog(t, store, filepath.Join(dir, "audit.jsonl"), c)
	archive := filepath.Join(dir, "archive")

	record(t, l, 0, 30)
	c.Advance(time.Hour)
	record(t, l, 30, 5)
	res, err := l.Prune(t.Context(), PruneOptions{Before: c.Now().Add(-30 * time.Minute), ArchiveDir: archive, Batch: 7})
	if err != nil {
		t.Fatal(err)
	}
	if res.Pruned != 30 || res.FirstSeq != 1 || res.LastSeq != 30 || filepath.Base(res.Segment) != SegmentName(1, 30) {
		t.Fatalf("Prune = %+v", res)
	}
	if fi, err := os.Stat(res.Segment); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("segment: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(archive); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("archive dir: %v %v", fi.Mode(), err)
	}
	anchor, err := store.AuditAnchor(t.Context())
	if err != nil || anchor.Seq != 30 {
		t.Fatalf("anchor %+v, %v", anchor, err)
	}
	exp := export(t, l)
	if first, _ := ParseEvent(bytes.SplitN(exp, []byte("\n"), 2)[0]); first.Seq != 31 {
		t.Fatalf("export starts at seq %d, want 31", first.Seq)
	}
	evs := queryEvents(t, l, Filter{Action: ActionAuditPrune})
	if len(evs) != 1 || evs[0].Seq != 36 || evs[0].Detail != "seq 1-30 pruned, archived in "+SegmentName(1, 30) {
		t.Fatalf("audit.prune events: %+v", evs)
	}
	if r, err := verifyFiles(t, segments(t, archive), exp); err != nil || !r.Anchored || r.FirstSeq != 1 || r.LastSeq != 36 {
		t.Fatalf("segments + export: %+v, %v", r, err)
	}
	if r, err := Verify(bytes.NewReader(exp)); err != nil || r.Anchored {
		t.Fatalf("export alone: %+v, %v (want unanchored)", r, err)
	}

	// Nothing old enough: no segment, no event.
	if res, err := l.Prune(t.Context(), PruneOptions{Before: c.Now().Add(-30 * time.Minute), ArchiveDir: archive}); err != nil || res.Pruned != 0 {
		t.Fatalf("second Prune = %+v, %v", res, err)
	}
	// A later run chains on: a second segment, and the head (the newest
	// event) is never pruned.
	c.Advance(time.Hour)
	res, err = l.Prune(t.Context(), PruneOptions{Before: c.Now(), ArchiveDir: archive})
	if err != nil || res.FirstSeq != 31 || res.LastSeq != 35 {
		t.Fatalf("third Prune = %+v, %v", res, err)
	}
	segs := segments(t, archive)
	if len(segs) != 2 {
		t.Fatalf("segments %v", segs)
	}
	if r, err := verifyFiles(t, segs, export(t, l)); err != nil || r.FirstSeq != 1 || r.LastSeq != 37 || !r.Anchored {
		t.Fatalf("segments + export: %+v, %v", r, err)
	}
	if _, err := l.VerifyStore(t.Context()); err != nil {
		t.Fatalf("VerifyStore after prune: %v", err)
	}
}

// Without an archive the events are gone and the store keeps the anchor:
// VerifyStore checks the rest against it.
func TestRetentionWithoutArchive(t *testing.T) {
	dir := t.TempDir()
	store := openBolt(t, filepath.Join(dir, "vault.db"))
	c := newClock()
	l := newTestLog(t, store, "", c)
	evs := record(t, l, 0, 10)
	c.Advance(time.Hour)
	record(t, l, 10, 2)
	res, err := l.Prune(t.Context(), PruneOptions{Before: c.Now().Add(-time.Minute)})
	if err != nil || res.Pruned != 10 || res.Segment != "" {
		t.Fatalf("Prune = %+v, %v", res, err)
	}
	if a, _ := store.AuditAnchor(t.Context()); a.Seq != 10 || a.Hash != evs[9].Hash {
		t.Fatalf("anchor %+v", a)
	}
	vr, err := l.VerifyStore(t.Context())
	if err != nil || vr.FirstSeq != 11 || !vr.Anchored {
		t.Fatalf("VerifyStore: %+v, %v", vr, err)
	}
}

// A crash after the segment was written but before (all) its events were
// deleted: the next run deletes them without writing them again, and the
// archive has neither a duplicate nor a gap.
func TestRetentionCrashBetweenSegmentAndPrune(t *testing.T) {
	dir := t.TempDir()
	store := openBolt(t, filepath.Join(dir, "vault.db"))
	c := newClock()
	l := newTestLog(t, store, "", c)
	archive := filepath.Join(dir, "archive")
	if err := os.Mkdir(archive, 0o700); err != nil {
		t.Fatal(err)
	}
	record(t, l, 0, 20)
	c.Advance(time.Hour)
	record(t, l, 20, 3)
	// What the crashed run left: segment 1-20 complete, 1-8 deleted, a
	// stray temporary file.
	full := export(t, l)
	lines := bytes.SplitAfter(full, []byte("\n"))
	seg := filepath.Join(archive, SegmentName(1, 20))
	if err := os.WriteFile(seg, bytes.Join(lines[:20], nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(archive, ".partial-segment-123"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := store.PruneAudit(t.Context(), 20, 8); err != nil || n != 8 {
		t.Fatalf("PruneAudit: %d, %v", n, err)
	}

	res, err := l.Prune(t.Context(), PruneOptions{Before: c.Now().Add(-time.Minute), ArchiveDir: archive, Batch: 5})
	if err != nil {
		t.Fatal(err)
	}
	if res.Pruned != 12 || res.FirstSeq != 9 || res.LastSeq != 20 || res.Segment != seg {
		t.Fatalf("Prune after the crash = %+v", res)
	}
	if ents, _ := os.ReadDir(archive); len(ents) != 1 {
		t.Fatalf("archive holds %d files, want the one segment", len(ents))
	}
	if r, err := verifyFiles(t, segments(t, archive), export(t, l)); err != nil || r.FirstSeq != 1 || r.LastSeq != 24 || !r.Anchored {
		t.Fatalf("segments + export: %+v, %v", r, err)
	}
	// Another run finds nothing more to do.
	if res, err := l.Prune(t.Context(), PruneOptions{Before: c.Now().Add(-time.Minute), ArchiveDir: archive}); err != nil || res.Pruned != 0 {
		t.Fatalf("Prune again = %+v, %v", res, err)
	}
}

// A segment on disk that does not hold the database's events is not
// trusted: nothing is pruned.
func TestRetentionRefusesForeignSegment(t *testing.T) {
	dir := t.TempDir()
	store := openBolt(t, filepath.Join(dir, "vault.db"))
	c := newClock()
	l := newTestLog(t, store, "", c)
	archive := filepath.Join(dir, "archive")
	if err := os.Mkdir(archive, 0o700); err != nil {
		t.Fatal(err)
	}
	record(t, l, 0, 10)
	c.Advance(time.Hour)
	record(t, l, 10, 2)
	lines := bytes.SplitAfter(export(t, l), []byte("\n"))
	bad := bytes.Replace(bytes.Join(lines[:5], nil), []byte("event 4"), []byte("event X"), 1)
	if err := os.WriteFile(filepath.Join(archive, SegmentName(1, 5)), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := l.Prune(t.Context(), PruneOptions{Before: c.Now().Add(-time.Minute), ArchiveDir: archive})
	if !errors.Is(err, ErrArchive) {
		t.Fatalf("Prune with a damaged segment: %v, want ErrArchive", err)
	}
	if a, _ := store.AuditAnchor(t.Context()); a.Seq != 0 {
		t.Fatalf("pruned up to %d despite the damaged segment", a.Seq)
	}
}

// prunedStore returns a closed bbolt file of n events whose first k were
// pruned, and the full trail as it was mirrored.
func prunedStore(t *testing.T, n, k int) (dbPath, mirror string, full []byte) {
	t.Helper()
	dir := t.TempDir()
	dbPath, mirror = filepath.Join(dir, "vault.db"), filepath.Join(dir, "audit.jsonl")
	s, err := bolt.Open(t.Context(), dbPath, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := newClock()
	l, err := New(t.Context(), s, Options{MirrorPath: mirror, Now: c.Now, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	record(t, l, 0, n)
	full = export(t, l)
	for pruned := 0; pruned < k; {
		m, err := s.PruneAudit(t.Context(), uint64(k), 3)
		if err != nil {
			t.Fatal(err)
		}
		pruned += m
	}
	if err := errors.Join(l.Close(), s.Close()); err != nil {
		t.Fatal(err)
	}
	return dbPath, mirror, full
}

// Start-up verification accepts a store whose chain starts at its anchor,
// on both the whole-chain and the tail-then-background paths, and still
// refuses one whose anchor does not match the first remaining event.
func TestStartupAcceptsPrunedStore(t *testing.T) {
	for _, tail := range []uint64{0, 5} {
		dbPath, _, _ := prunedStore(t, 40, 25)
		store := openBolt(t, dbPath)
		l, err := New(t.Context(), store, Options{VerifyOnStart: true, VerifyTail: tail, Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("tail %d: New on a pruned store: %v", tail, err)
		}
		if l.bgDone != nil {
			<-l.bgDone
			if l.bgErr != nil {
				t.Fatalf("tail %d: background verification: %v", tail, l.bgErr)
			}
		}
		if err := l.Broken(); err != nil {
			t.Fatalf("tail %d: %v", tail, err)
		}
		_ = l.Close()
	}

	dbPath, _, _ := prunedStore(t, 40, 25)
	db, err := bbolt.Open(dbPath, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		sys := tx.Bucket([]byte("sys"))
		v := bytes.Replace(bytes.Clone(sys.Get([]byte("audit_anchor"))), []byte(`"hash":"`), []byte(`"hash":"0`), 1)
		return sys.Put([]byte("audit_anchor"), append(v[:len(v)-3], []byte(`"}`)...))
	})
	_ = db.Close()
	if err != nil {
		t.Fatal(err)
	}
	store := openBolt(t, dbPath)
	_, err = New(t.Context(), store, Options{VerifyOnStart: true, Logger: testLogger(t)})
	var ce *ChainError
	if !errors.As(err, &ce) || ce.Seq != 26 {
		t.Fatalf("New with a wrong anchor: %v, want a break at seq 26", err)
	}
}

// The mirror may hold older lines than a pruned store: it is kept, not
// renamed as corrupt, and carries on; a new mirror starts after the
// anchor.
func TestMirrorAcceptsPrunedStore(t *testing.T) {
	dbPath, mirror, full := prunedStore(t, 30, 20)
	if got := readFile(t, mirror); !bytes.Equal(got, full) {
		t.Fatal("mirror is not the full trail")
	}
	store := openBolt(t, dbPath)
	c := newClock()
	c.Advance(time.Hour)
	l := newTestLog(t, store, mirror, c)
	record(t, l, 30, 2)
	if l.MirrorFailures() != 0 {
		t.Fatalf("mirror failures: %d", l.MirrorFailures())
	}
	if m, _ := filepath.Glob(mirror + ".corrupt-*"); len(m) != 0 {
		t.Fatalf("mirror moved aside: %v", m)
	}
	got := readFile(t, mirror)
	if !bytes.HasPrefix(got, full) {
		t.Fatal("mirror lost its older lines")
	}
	if r, err := Verify(bytes.NewReader(got)); err != nil || r.FirstSeq != 1 || r.LastSeq != 32 {
		t.Fatalf("mirror: %+v, %v", r, err)
	}
	_ = l.Close()

	// A new mirror on the pruned store starts at the first remaining event.
	fresh := filepath.Join(t.TempDir(), "new.jsonl")
	l = newTestLog(t, store, fresh, c)
	record(t, l, 32, 1)
	r, err := Verify(bytes.NewReader(readFile(t, fresh)))
	if err != nil || r.FirstSeq != 21 || r.LastSeq != 33 {
		t.Fatalf("new mirror: %+v, %v", r, err)
	}
	if !strings.Contains(string(readFile(t, fresh)), `"seq":21,`) {
		t.Fatal("new mirror lacks seq 21")
	}
}

// With signed checkpoints, start-up verifies from the newest one; when
// that is the first event left after a prune, nothing older remains and
// the background pass must accept the anchor rather than report a break.
func TestStartupPrunedToCheckpoint(t *testing.T) {
	signer := hsmtest.NewFake()
	pub, err := signer.AuditPublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(t.TempDir(), "vault.db")
	s, err := bolt.Open(t.Context(), dbPath, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(t.Context(), s, Options{Logger: testLogger(t), Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	record(t, l, 0, 5)
	checkpoint(t, l, signer, 6)
	record(t, l, 5, 20)
	if n, err := s.PruneAudit(t.Context(), 5, 100); err != nil || n != 5 {
		t.Fatalf("PruneAudit: %d, %v", n, err)
	}
	if err := errors.Join(l.Close(), s.Close()); err != nil {
		t.Fatal(err)
	}
	store := openBolt(t, dbPath)
	l, err = New(t.Context(), store, Options{Logger: testLogger(t), VerifyOnStart: true, VerifyTail: 3, CheckpointKey: pub})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer l.Close()
	if l.bgDone != nil {
		<-l.bgDone
	}
	if l.bgErr != nil || l.Broken() != nil {
		t.Fatalf("background verification: %v, %v", l.bgErr, l.Broken())
	}
}
