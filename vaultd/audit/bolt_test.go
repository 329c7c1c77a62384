package audit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
)

// The same properties against the real bbolt store (a file in t.TempDir()).

func openBolt(t testing.TB, path string) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(t.Context(), path, bolt.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestBoltConcurrentChainAndMirror(t *testing.T) {
	const workers, per = 50, 3
	dir := t.TempDir()
	store := openBolt(t, filepath.Join(dir, "vault.db"))
	path := filepath.Join(dir, "audit.jsonl")
	l := newTestLog(t, store, path, newClock())

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if _, err := l.Record(t.Context(), sampleEvent(w*per+i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	exp := export(t, l)
	res, err := Verify(bytes.NewReader(exp))
	if err != nil || res.Events != workers*per || !res.Anchored {
		t.Fatalf("store chain: %+v, %v", res, err)
	}
	if got := readFile(t, path); !bytes.Equal(got, exp) {
		t.Fatal("mirror differs from the bolt export")
	}
	if vr, err := l.VerifyStore(t.Context()); err != nil || vr != res {
		t.Fatalf("VerifyStore: %+v, %v", vr, err)
	}
	head, err := store.AuditHead(t.Context())
	if err != nil || head.Seq != res.LastSeq || head.Hash != res.LastHash {
		t.Fatalf("head %+v, %v; chain ends %d %s", head, err, res.LastSeq, res.LastHash)
	}
	if got := queryEvents(t, l, Filter{TenantID: "globex", Action: ActionProxyRequest}); len(got) == 0 {
		t.Fatal("filtered query found nothing")
	} else {
		for _, ev := range got {
			if ev.TenantID != "globex" || ev.Action != ActionProxyRequest {
				t.Fatalf("filter leaked %+v", ev)
			}
		}
	}
}

func TestBoltMirrorResyncAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "vault.db")
	path := filepath.Join(dir, "audit.jsonl")

	s1, err := bolt.Open(t.Context(), dbPath, bolt.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	l1, err := New(t.Context(), s1, Options{MirrorPath: path, Logger: testLogger(t), Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	record(t, l1, 0, 20)
	full := export(t, l1)
	if err := l1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	// The mirror lost its last five lines and has a torn one.
	cut := 0
	for range 15 {
		cut += bytes.IndexByte(full[cut:], '\n') + 1
	}
	if err := os.WriteFile(path, full[:cut+17], 0o600); err != nil {
		t.Fatal(err)
	}

	store := openBolt(t, dbPath)
	l := newTestLog(t, store, path, newClock())
	if got := readFile(t, path); !bytes.Equal(got, full) {
		t.Fatal("mirror not resynced from bolt")
	}
	record(t, l, 20, 2)
	res, err := Verify(bytes.NewReader(readFile(t, path)))
	if err != nil || res.LastSeq != 22 || !res.Anchored {
		t.Fatalf("%+v, %v", res, err)
	}
}

// boltChain records n events into a bbolt file and closes it.
func boltChain(t testing.TB, n int, noSync bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vault.db")
	s, err := bolt.Open(t.Context(), path, bolt.Options{NoSync: noSync})
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(t.Context(), s, Options{Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	record(t, l, 0, n)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// editBolt changes the audit bucket of a closed database directly.
func editBolt(t *testing.T, path string, edit func(b *bbolt.Bucket) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error { return edit(tx.Bucket([]byte("audit"))) }); err != nil {
		t.Fatal(err)
	}
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// The start-up check on the real store: an edited, a deleted and a
// missing last event each refuse the start naming the first broken seq,
// and a damaged record stays recognisable as storage.ErrCorrupt.
func TestBoltVerifyOnStart(t *testing.T) {
	const n = 12
	cases := []struct {
		name    string
		edit    func(b *bbolt.Bucket) error
		seq     uint64
		corrupt bool
	}{
		{"edited detail", func(b *bbolt.Bucket) error {
			v := bytes.Replace(bytes.Clone(b.Get(seqKey(5))), []byte(`"detail":"`), []byte(`"detail":"x`), 1)
			return b.Put(seqKey(5), v)
		}, 5, false},
		{"deleted event", func(b *bbolt.Bucket) error { return b.Delete(seqKey(5)) }, 5, true},
		{"deleted last event", func(b *bbolt.Bucket) error { return b.Delete(seqKey(n)) }, n, true},
		{"seq field edited", func(b *bbolt.Bucket) error {
			v := bytes.Replace(bytes.Clone(b.Get(seqKey(7))), []byte(`"seq":7,`), []byte(`"seq":70,`), 1)
			return b.Put(seqKey(7), v)
		}, 7, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, tail := range []uint64{0, 2} {
				path := boltChain(t, n, true)
				editBolt(t, path, c.edit)
				store := openBolt(t, path)
				l, err := startLog(t, store, "", tail, nil)
				if tail != 0 && c.seq < n-tail+1 {
					if err != nil {
						t.Fatalf("tail %d: %v", tail, err)
					}
					waitBackground(t, l)
					err = l.bgErr
				}
				wantStartRefused(t, err, c.seq)
				if c.corrupt != errors.Is(err, storage.ErrCorrupt) {
					t.Fatalf("tail %d: errors.Is(ErrCorrupt) = %v: %v", tail, !c.corrupt, err)
				}
			}
		})
	}
}

// BenchmarkVerifyStoredChain measures the start-up check per stored event
// (bbolt scan plus the general verification path), which decides how much
// of the chain vaultd verifies before it is ready (DefaultVerifyTail).
func BenchmarkVerifyStoredChain(b *testing.B) {
	const n = 20000
	store := openBolt(b, boltChain(b, n, true))
	l, err := New(context.Background(), store, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if res, err := l.VerifyStore(context.Background()); err != nil || res.Events != n {
			b.Fatal(res, err)
		}
	}
	perEvent := float64(b.Elapsed().Nanoseconds()) / float64(b.N) / n
	b.ReportMetric(perEvent, "ns/event")
	b.ReportMetric(perEvent*1e6/1e9, "s/1M-events")
}
