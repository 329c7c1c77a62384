package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vaultd/vaultd/storage"
)

// 50 goroutines record at once: the store's chain and the mirror are both
// one consistent chain, the mirror's lines are in seq order, and every
// returned event is the stored one.
func TestConcurrentRecord(t *testing.T) {
	const workers, per = 50, 6
	store := &fakeStore{}
	path := mirrorPath(t)
	l := newTestLog(t, store, path, newClock())

	var wg sync.WaitGroup
	results := make([][]Event, workers)
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				ev, err := l.Record(t.Context(), sampleEvent(w*per+i))
				if err != nil {
					errs[w] = err
					return
				}
				results[w] = append(results[w], ev)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	exp := export(t, l)
	res, err := Verify(bytes.NewReader(exp))
	if err != nil {
		t.Fatalf("store chain: %v", err)
	}
	if res.Events != workers*per || !res.Anchored {
		t.Fatalf("store chain: %+v", res)
	}
	mirror := readFile(t, path)
	if !bytes.Equal(mirror, exp) {
		t.Fatalf("mirror (%d bytes) differs from the store export (%d bytes)", len(mirror), len(exp))
	}
	if _, err := Verify(bytes.NewReader(mirror)); err != nil {
		t.Fatalf("mirror chain: %v", err)
	}
	seen := map[uint64]bool{}
	for _, rs := range results {
		for _, ev := range rs {
			if seen[ev.Seq] {
				t.Fatalf("seq %d returned twice", ev.Seq)
			}
			seen[ev.Seq] = true
			if got := store.recs[ev.Seq-1].Hash; got != ev.Hash {
				t.Fatalf("seq %d: returned hash %s, stored %s", ev.Seq, ev.Hash, got)
			}
		}
	}
	if len(seen) != workers*per {
		t.Fatalf("%d distinct seqs, want %d", len(seen), workers*per)
	}
	if n := l.MirrorFailures(); n != 0 {
		t.Fatalf("%d mirror failures", n)
	}
}

// A Record that reaches the mirror after a later seq was committed finds
// its line already written, from the store, in order.
func TestMirrorOutOfOrderArrival(t *testing.T) {
	store := &fakeStore{}
	path := mirrorPath(t)
	l := newTestLog(t, store, path, newClock())
	record(t, l, 0, 1)
	// Commit seqs 2..4 without mirroring, as goroutines still on their way.
	var recs []storage.AuditRecord
	for i := 1; i < 4; i++ {
		ev, _ := sanitize(sampleEvent(i))
		rec, err := store.AppendAudit(t.Context(), func(h storage.AuditHead) (storage.AuditRecord, error) {
			e := ev
			e.Seq, e.PrevHash, e.Time = h.Seq+1, h.Hash, NewTimestamp(l.now())
			line, hash, err := seal(e)
			return storage.AuditRecord{Seq: e.Seq, Hash: hash, Data: line}, err
		})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	l.mirror(t.Context(), recs[2]) // seq 4 arrives first
	l.mirror(t.Context(), recs[0]) // seq 2: already written
	l.mirror(t.Context(), recs[1])
	if got, want := readFile(t, path), export(t, l); !bytes.Equal(got, want) {
		t.Fatalf("mirror:\n%s\nwant:\n%s", got, want)
	}
}

func TestMirrorResync(t *testing.T) {
	ctx := t.Context()
	setup := func(t *testing.T) (*fakeStore, string, []byte) {
		store := &fakeStore{}
		path := mirrorPath(t)
		l := newTestLog(t, store, path, newClock())
		record(t, l, 0, 10)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		return store, path, export(t, l)
	}
	lineEnd := func(b []byte, n int) int { // offset after the n-th line
		off := 0
		for range n {
			off += bytes.IndexByte(b[off:], '\n') + 1
		}
		return off
	}
	corruptFiles := func(t *testing.T, path string) []string {
		m, err := filepath.Glob(path + ".corrupt-*")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	t.Run("lost tail", func(t *testing.T) {
		store, path, full := setup(t)
		if err := os.WriteFile(path, full[:lineEnd(full, 6)], 0o600); err != nil {
			t.Fatal(err)
		}
		l := newTestLog(t, store, path, newClock())
		if got := readFile(t, path); !bytes.Equal(got, full) {
			t.Fatalf("mirror not resynced:\n%s", got)
		}
		record(t, l, 10, 1)
		if _, err := Verify(bytes.NewReader(readFile(t, path))); err != nil {
			t.Fatal(err)
		}
		if len(corruptFiles(t, path)) != 0 {
			t.Fatal("a lost tail is not corruption")
		}
	})
	t.Run("torn last line", func(t *testing.T) {
		store, path, full := setup(t)
		cut := lineEnd(full, 6) + 40 // half of line 7
		if err := os.WriteFile(path, full[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		newTestLog(t, store, path, newClock())
		if got := readFile(t, path); !bytes.Equal(got, full) {
			t.Fatalf("mirror not repaired:\n%s", got)
		}
	})
	t.Run("missing file is backfilled from seq 1", func(t *testing.T) {
		store, path, full := setup(t)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		newTestLog(t, store, path, newClock())
		if got := readFile(t, path); !bytes.Equal(got, full) {
			t.Fatal("mirror not backfilled")
		}
		fi, _ := os.Stat(path)
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("mirror mode %v, want 0600", fi.Mode().Perm())
		}
	})
	t.Run("edited line is moved aside", func(t *testing.T) {
		store, path, full := setup(t)
		bad := bytes.Replace(bytes.Clone(full), []byte("event 3 "), []byte("event 9 "), 1)
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		l := newTestLog(t, store, path, newClock())
		if got := readFile(t, path); !bytes.Equal(got, full) {
			t.Fatal("mirror not rewritten from the store")
		}
		c := corruptFiles(t, path)
		if len(c) != 1 || !bytes.Equal(readFile(t, c[0]), bad) {
			t.Fatalf("corrupt file not kept aside: %v", c)
		}
		if l.MirrorFailures() == 0 {
			t.Fatal("corruption not counted")
		}
	})
	t.Run("line the store lacks is moved aside", func(t *testing.T) {
		store, path, full := setup(t)
		store.truncateTo(8) // the store restored from an older backup
		l := newTestLog(t, store, path, newClock())
		if got, want := readFile(t, path), export(t, l); !bytes.Equal(got, want) || bytes.Count(got, []byte("\n")) != 8 {
			t.Fatalf("mirror not rewritten to the store's 8 events:\n%s", got)
		}
		c := corruptFiles(t, path)
		if len(c) != 1 || !bytes.Equal(readFile(t, c[0]), full) {
			t.Fatalf("corrupt file not kept aside: %v", c)
		}
	})
	t.Run("rotated segment continues after Reopen", func(t *testing.T) {
		store := &fakeStore{}
		path := mirrorPath(t)
		l := newTestLog(t, store, path, newClock())
		record(t, l, 0, 5)
		if err := os.Rename(path, path+".1"); err != nil { // logrotate "create"
			t.Fatal(err)
		}
		record(t, l, 5, 2) // still goes to the renamed file until SIGHUP
		if err := l.Reopen(ctx); err != nil {
			t.Fatal(err)
		}
		record(t, l, 7, 3)
		seg, err := Verify(bytes.NewReader(readFile(t, path)))
		if err != nil || seg.FirstSeq != 8 || seg.LastSeq != 10 || seg.Anchored {
			t.Fatalf("new segment: %+v, %v", seg, err)
		}
		both := append(readFile(t, path+".1"), readFile(t, path)...)
		if !bytes.Equal(both, export(t, l)) {
			t.Fatal("rotated + current mirror differ from the store")
		}
		// A restart keeps the segment as it is (no backfill into it).
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		newTestLog(t, store, path, newClock())
		if seg2, err := Verify(bytes.NewReader(readFile(t, path))); err != nil || seg2 != seg {
			t.Fatalf("after restart: %+v, %v", seg2, err)
		}
	})
	t.Run("symlink refused", func(t *testing.T) {
		store := &fakeStore{}
		dir := t.TempDir()
		target := filepath.Join(dir, "elsewhere")
		if err := os.WriteFile(target, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, "audit.jsonl")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if _, err := New(ctx, store, Options{MirrorPath: link, Logger: testLogger(t)}); err == nil {
			t.Fatal("New followed a symlinked mirror path")
		}
	})
	t.Run("unopenable mirror fails New", func(t *testing.T) {
		_, err := New(ctx, &fakeStore{}, Options{MirrorPath: filepath.Join(t.TempDir(), "no", "such", "dir", "a.jsonl"), Logger: testLogger(t)})
		if err == nil {
			t.Fatal("New succeeded with an unopenable mirror")
		}
	})
}

// A failing mirror write never fails Record; it is counted, and the
// mirror is repaired from the store once the retry interval has passed.
func TestMirrorWriteFailureIsNotFatal(t *testing.T) {
	store := &fakeStore{}
	path := mirrorPath(t)
	c := newClock()
	l := newTestLog(t, store, path, c)
	record(t, l, 0, 3)

	// Swap the mirror for a read-only descriptor of the same file: every
	// write (and the cut-back truncate) now fails with EBADF.
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	_ = l.f.Close()
	l.f = ro
	l.mu.Unlock()

	ev, err := l.Record(t.Context(), sampleEvent(3))
	if err != nil {
		t.Fatalf("Record failed because of the mirror: %v", err)
	}
	if ev.Seq != 4 || len(store.recs) != 4 {
		t.Fatalf("event not in the store: seq %d, %d records", ev.Seq, len(store.recs))
	}
	if l.MirrorFailures() == 0 {
		t.Fatal("failure not counted")
	}
	// Within the retry interval the mirror is left alone.
	record(t, l, 4, 1)
	if got := bytes.Count(readFile(t, path), []byte("\n")); got != 3 {
		t.Fatalf("mirror has %d lines during back-off, want 3", got)
	}
	c.Advance(mirrorRetry)
	record(t, l, 5, 1)
	if got, want := readFile(t, path), export(t, l); !bytes.Equal(got, want) {
		t.Fatalf("mirror not repaired:\n%s", got)
	}
}
