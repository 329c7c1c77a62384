package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vaultd/vaultd/storage"
)

// countingStore counts AppendAudit calls (each one transaction, one fsync
// on a real store).
type countingStore struct {
	Store
	appends atomic.Int64
}

func (s *countingStore) AppendAudit(ctx context.Context, build storage.AuditFunc) (storage.AuditRecord, error) {
	s.appends.Add(1)
	return s.Store.AppendAudit(ctx, build)
}

// newBatchLog opens a batch-mode Log whose committer runs only when tick
// is sent on (nil: never), so a test decides when events reach the store.
func newBatchLog(t testing.TB, store Store, wal string, tick chan time.Time) (*Log, error) {
	t.Helper()
	if tick == nil {
		tick = make(chan time.Time)
	}
	l, err := New(t.Context(), store, Options{Logger: testLogger(t), Now: newClock().Now,
		WALPath: wal, SyncInterval: time.Hour, Tick: tick})
	if err == nil {
		t.Cleanup(func() { _ = l.Close() })
	}
	return l, err
}

func proxyEvent(n int) Event {
	ev := sampleEvent(n)
	ev.Action = ActionProxyRequest
	return ev
}

func stateEvent(n int) Event {
	ev := sampleEvent(n)
	ev.Action = ActionTokenStore
	return ev
}

func walLineCount(t testing.TB, path string) int {
	t.Helper()
	return bytes.Count(readFile(t, path), []byte{'\n'})
}

func storeEvents(t testing.TB, s Store) int {
	t.Helper()
	h, err := s.AuditHead(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return int(h.Seq)
}

// verifyStore checks the store's chain is one gapless, verifying chain of
// want events.
func verifyStore(t testing.TB, s Store, want int) {
	t.Helper()
	l, err := New(t.Context(), s, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Verify(bytes.NewReader(export(t, l)))
	if err != nil || res.Events != want || !res.Anchored {
		t.Fatalf("store chain: %+v, %v (want %d events)", res, err, want)
	}
}

func TestWALRecordDoesNotCommit(t *testing.T) {
	store := &countingStore{Store: &fakeStore{}}
	wal := filepath.Join(t.TempDir(), "vault.db.audit-wal")
	tick := make(chan time.Time)
	l, err := newBatchLog(t, store, wal, tick)
	if err != nil {
		t.Fatal(err)
	}
	var got []Event
	for i := range 10 {
		ev, err := l.Record(t.Context(), proxyEvent(i))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Seq != uint64(i+1) || ev.Hash == "" {
			t.Fatalf("event %d sealed as seq %d hash %q", i, ev.Seq, ev.Hash)
		}
		got = append(got, ev)
	}
	if n := store.appends.Load(); n != 0 {
		t.Fatalf("%d AppendAudit calls before the committer ran, want 0", n)
	}
	if n := walLineCount(t, wal); n != 10 {
		t.Fatalf("WAL holds %d lines, want 10", n)
	}
	if st, err := os.Stat(wal); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("WAL mode: %v, %v", st, err)
	}
	tick <- time.Now()
	for deadline := time.Now().Add(10 * time.Second); storeEvents(t, store) < 10; {
		if time.Now().After(deadline) {
			t.Fatal("the committer did not commit the pending events")
		}
		time.Sleep(time.Millisecond)
	}
	if n := store.appends.Load(); n != 1 {
		t.Fatalf("%d AppendAudit calls for one drain, want 1", n)
	}
	if err := l.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := walLineCount(t, wal); n != 0 {
		t.Fatalf("WAL holds %d lines after the drain, want 0", n)
	}
	// What Record returned is what the store holds.
	i := 0
	err = store.ScanAudit(t.Context(), 0, func(r storage.AuditRecord) (bool, error) {
		if r.Seq != got[i].Seq || r.Hash != got[i].Hash {
			t.Errorf("stored seq %d hash %s, Record returned seq %d hash %s", r.Seq, r.Hash, got[i].Seq, got[i].Hash)
		}
		i++
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	verifyStore(t, store, 10)
}

// A state change commits the pending token-use events ahead of its own,
// in its own transaction.
func TestWALStateChangeCarriesPending(t *testing.T) {
	store := &countingStore{Store: &fakeStore{}}
	wal := filepath.Join(t.TempDir(), "w")
	l, err := newBatchLog(t, store, wal, nil)
	if err != nil {
		t.Fatal(err)
	}
	record(t, l, 0, 0)
	for i := range 3 {
		if _, err := l.Record(t.Context(), proxyEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	ev, err := l.Record(t.Context(), stateEvent(3))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 4 || ev.Action != ActionTokenStore {
		t.Fatalf("state change returned %+v, want seq 4", ev)
	}
	if n := store.appends.Load(); n != 1 {
		t.Fatalf("%d transactions, want 1", n)
	}
	if storeEvents(t, store) != 4 || walLineCount(t, wal) != 0 {
		t.Fatalf("store head %d, WAL %d lines", storeEvents(t, store), walLineCount(t, wal))
	}
	// A checkpoint-like fill sees the head after the pending events.
	if _, err := l.Record(t.Context(), proxyEvent(4)); err != nil {
		t.Fatal(err)
	}
	var filled storage.AuditHead
	_, err = l.recordAll(t.Context(), []Event{stateEvent(5)}, func(h storage.AuditHead) (string, error) {
		filled = h
		return "x", nil
	}, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		return store.AppendAudit(t.Context(), build)
	})
	if err != nil || filled.Seq != 5 {
		t.Fatalf("fill saw head %d, want 5 (%v)", filled.Seq, err)
	}
	verifyStore(t, store, 6)
}

// sealedLines returns n proxy.request lines chaining on from head.
func sealedLines(t testing.TB, head storage.AuditHead, from, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := range n {
		ev := proxyEvent(from + i)
		ev.Seq, ev.PrevHash, ev.Time = head.Seq+1, head.Hash, NewTimestamp(time.Unix(1700000000, 0))
		line, hash, err := seal(ev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, line)
		head = storage.AuditHead{Seq: ev.Seq, Hash: hash}
	}
	return out
}

func writeWAL(t testing.TB, path string, lines [][]byte, tail string) {
	t.Helper()
	var buf []byte
	for _, l := range lines {
		buf = append(append(buf, l...), '\n')
	}
	if err := os.WriteFile(path, append(buf, tail...), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestWALReplay(t *testing.T) {
	genesis := storage.AuditHead{Hash: storage.GenesisHash}
	t.Run("chains on and drops a torn tail", func(t *testing.T) {
		store := &fakeStore{}
		wal := filepath.Join(t.TempDir(), "w")
		lines := sealedLines(t, genesis, 0, 5)
		writeWAL(t, wal, lines, `{"seq":6,"tim`)
		l, err := newBatchLog(t, store, wal, nil)
		if err != nil {
			t.Fatal(err)
		}
		if l.WALReplayed() != 5 || storeEvents(t, store) != 5 {
			t.Fatalf("replayed %d, store head %d, want 5", l.WALReplayed(), storeEvents(t, store))
		}
		if n := len(readFile(t, wal)); n != 0 {
			t.Fatalf("WAL keeps %d bytes after replay", n)
		}
		// Recording continues the chain.
		if ev, err := l.Record(t.Context(), proxyEvent(9)); err != nil || ev.Seq != 6 {
			t.Fatalf("next event seq %d, %v", ev.Seq, err)
		}
		if err := l.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		verifyStore(t, store, 6)
	})
	t.Run("skips committed lines", func(t *testing.T) {
		store := &fakeStore{}
		wal := filepath.Join(t.TempDir(), "w")
		lines := sealedLines(t, genesis, 0, 5)
		for i := range 3 {
			line := lines[i]
			ev, err := ParseEvent(line)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := store.AppendAudit(t.Context(), func(storage.AuditHead) (storage.AuditRecord, error) {
				return storage.AuditRecord{Seq: ev.Seq, Hash: ev.Hash, Data: line}, nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		writeWAL(t, wal, lines, "")
		l, err := newBatchLog(t, store, wal, nil)
		if err != nil {
			t.Fatal(err)
		}
		if l.WALReplayed() != 2 {
			t.Fatalf("replayed %d, want 2", l.WALReplayed())
		}
		verifyStore(t, store, 5)
	})
	for name, mangle := range map[string]func([][]byte) [][]byte{
		"gap": func(ls [][]byte) [][]byte { return append(ls[:2:2], ls[3:]...) },
		"tampered": func(ls [][]byte) [][]byte {
			ls[2] = bytes.Replace(ls[2], []byte("req-0002"), []byte("req-9999"), 1)
			return ls
		},
		"other chain": func(ls [][]byte) [][]byte { return append(ls[:2:2], sealedLines(t, genesis, 7, 3)[2]) },
	} {
		t.Run("refuses "+name, func(t *testing.T) {
			store := &fakeStore{}
			wal := filepath.Join(t.TempDir(), "w")
			lines := sealedLines(t, genesis, 0, 5)
			lines = mangle(lines)
			writeWAL(t, wal, lines, "")
			_, err := newBatchLog(t, store, wal, nil)
			var ce *ChainError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), "seq ") {
				t.Fatalf("New: %v, want a ChainError naming the seq", err)
			}
			if ce.Seq < 3 || ce.Seq > 4 {
				t.Fatalf("ChainError names seq %d, want 3 or 4: %v", ce.Seq, err)
			}
			if storeEvents(t, store) != 0 {
				t.Fatalf("a refused replay committed %d events", storeEvents(t, store))
			}
		})
	}
}

// After a crash (no Close, no drain) the next Log finds every recorded
// token-use event in the WAL and commits it.
func TestWALCrashReplay(t *testing.T) {
	dir := t.TempDir()
	store := openBolt(t, filepath.Join(dir, "vault.db"))
	wal := filepath.Join(dir, "vault.db.audit-wal")
	l1, err := newBatchLog(t, store, wal, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l1.Record(t.Context(), stateEvent(0)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		if _, err := l1.Record(t.Context(), proxyEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The crash: l1 never drains (its Close at cleanup finds the events
	// committed by l2's replay). l2 reads a copy of the file, as left.
	crashed := filepath.Join(dir, "copy.audit-wal")
	if err := os.WriteFile(crashed, readFile(t, wal), 0o600); err != nil {
		t.Fatal(err)
	}
	if storeEvents(t, store) != 1 {
		t.Fatalf("store head %d before replay, want 1", storeEvents(t, store))
	}
	reg := prometheus.NewRegistry()
	l2, err := New(t.Context(), store, Options{Logger: testLogger(t), WALPath: crashed,
		SyncInterval: time.Hour, Tick: make(chan time.Time), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l2.Close() })
	if l2.WALReplayed() != 20 {
		t.Fatalf("replayed %d, want 20", l2.WALReplayed())
	}
	if v := gauge(t, reg, "vaultd_audit_wal_replayed_events"); v != 20 {
		t.Fatalf("vaultd_audit_wal_replayed_events = %v, want 20", v)
	}
	verifyStore(t, store, 21)
}

// Close drains the pending events into the store and empties the WAL.
func TestWALShutdownDrain(t *testing.T) {
	store := &countingStore{Store: &fakeStore{}}
	wal := filepath.Join(t.TempDir(), "w")
	l, err := newBatchLog(t, store, wal, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if _, err := l.Record(t.Context(), proxyEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if storeEvents(t, store) != 7 || len(readFile(t, wal)) != 0 {
		t.Fatalf("after Close: store head %d, WAL %d bytes", storeEvents(t, store), len(readFile(t, wal)))
	}
	if _, err := l.Record(t.Context(), proxyEvent(8)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Record after Close: %v", err)
	}
	verifyStore(t, store, 7)
}

// Token-use events, state changes (single and multi-event), drains and
// queries interleave on the real store: the result is one gapless chain
// holding every event, each as Record returned it.
func TestWALConcurrentInterleaving(t *testing.T) {
	dir := t.TempDir()
	store := openBolt(t, filepath.Join(dir, "vault.db"))
	tick := make(chan time.Time)
	l, err := newBatchLog(t, store, filepath.Join(dir, "vault.db.audit-wal"), tick)
	if err != nil {
		t.Fatal(err)
	}
	const workers, per = 8, 40
	var mu sync.Mutex
	returned := map[uint64]string{}
	keep := func(evs ...Event) {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range evs {
			if _, dup := returned[ev.Seq]; dup {
				t.Errorf("seq %d returned twice", ev.Seq)
			}
			returned[ev.Seq] = ev.Hash
		}
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case tick <- time.Now():
			}
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				n := w*per + i
				switch {
				case w%4 == 1 && i%5 == 0:
					evs, err := l.RecordAllWith(t.Context(), []Event{stateEvent(n), stateEvent(n + 1)},
						func(build storage.AuditFunc) (storage.AuditRecord, error) {
							return store.AppendAudit(t.Context(), build)
						})
					if err != nil {
						t.Error(err)
						return
					}
					keep(evs...)
				case w%4 == 2 && i%3 == 0:
					ev, err := l.Record(t.Context(), stateEvent(n))
					if err != nil {
						t.Error(err)
						return
					}
					keep(ev)
				case w%4 == 3 && i%10 == 0:
					if err := l.Flush(t.Context()); err != nil {
						t.Error(err)
						return
					}
					export(t, l)
				default:
					ev, err := l.Record(t.Context(), proxyEvent(n))
					if err != nil {
						t.Error(err)
						return
					}
					keep(ev)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = store.ScanAudit(t.Context(), 0, func(r storage.AuditRecord) (bool, error) {
		n++
		if returned[r.Seq] != r.Hash {
			t.Errorf("seq %d stored with hash %s, returned %q", r.Seq, r.Hash, returned[r.Seq])
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(returned) {
		t.Fatalf("store holds %d events, %d were returned", n, len(returned))
	}
	verifyStore(t, store, n)
}

// A store that keeps failing to take the pending events makes Record fail
// closed once too many wait; they are committed when it recovers.
func TestWALFailsClosedWhenStoreIsStuck(t *testing.T) {
	store := &fakeStore{}
	l, err := newBatchLog(t, store, filepath.Join(t.TempDir(), "w"), nil)
	if err != nil {
		t.Fatal(err)
	}
	l.maxPending = 5
	store.mu.Lock()
	store.failErr = errors.New("disk gone")
	store.mu.Unlock()
	for i := range 5 {
		if _, err := l.Record(t.Context(), proxyEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Flush(t.Context()); err == nil {
		t.Fatal("Flush with a failing store: nil error")
	}
	if _, err := l.Record(t.Context(), proxyEvent(5)); err == nil {
		t.Fatal("Record with 5 events stuck: nil error, want fail closed")
	}
	if _, err := l.Record(t.Context(), stateEvent(5)); err == nil {
		t.Fatal("state change with a failing store: nil error")
	}
	store.mu.Lock()
	store.failErr = nil
	store.mu.Unlock()
	if ev, err := l.Record(t.Context(), stateEvent(6)); err != nil || ev.Seq != 6 {
		t.Fatalf("state change after recovery: seq %d, %v", ev.Seq, err)
	}
	verifyStore(t, store, 6)
}
