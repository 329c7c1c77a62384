package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
)

// The same properties against the real bbolt store (a file in t.TempDir()).

func openBolt(t *testing.T, path string) storage.Store {
	t.Helper()
	s, err := bolt.Open(context.Background(), path, bolt.Options{Logger: testLogger(t)})
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
				if _, err := l.Record(context.Background(), sampleEvent(w*per+i)); err != nil {
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
	if vr, err := l.VerifyStore(context.Background()); err != nil || vr != res {
		t.Fatalf("VerifyStore: %+v, %v", vr, err)
	}
	head, err := store.AuditHead(context.Background())
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

	s1, err := bolt.Open(context.Background(), dbPath, bolt.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	l1, err := New(context.Background(), s1, Options{MirrorPath: path, Logger: testLogger(t), Now: newClock().Now})
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
