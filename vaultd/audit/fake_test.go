package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// fakeStore implements Store (the audit part of storage.Store) in memory
// and nothing else, so no audit code can call another store method. It calls build twice per append (the second result commits),
// as a retried bbolt batch may, and yields after committing so concurrent
// Records return out of seq order.
var _ Store = (*fakeStore)(nil)

type fakeStore struct {
	mu      sync.Mutex
	recs    []storage.AuditRecord
	failErr error // AppendAudit fails with this when set
	scans   atomic.Int64
}

func (s *fakeStore) AppendAudit(ctx context.Context, build storage.AuditFunc) (storage.AuditRecord, error) {
	if err := ctx.Err(); err != nil {
		return storage.AuditRecord{}, err
	}
	s.mu.Lock()
	if s.failErr != nil {
		err := s.failErr
		s.mu.Unlock()
		return storage.AuditRecord{}, err
	}
	head := s.headLocked()
	first, err := build(head)
	if err != nil {
		s.mu.Unlock()
		return storage.AuditRecord{}, err
	}
	rec, err := build(head)
	if err != nil {
		s.mu.Unlock()
		return storage.AuditRecord{}, err
	}
	if first.Seq != rec.Seq || first.Hash != rec.Hash || !bytes.Equal(first.Data, rec.Data) {
		s.mu.Unlock()
		return storage.AuditRecord{}, errors.New("fake: build is not pure")
	}
	if rec.Seq != head.Seq+1 {
		s.mu.Unlock()
		return storage.AuditRecord{}, fmt.Errorf("fake: seq %d after head %d", rec.Seq, head.Seq)
	}
	if len(first.More) != len(rec.More) {
		s.mu.Unlock()
		return storage.AuditRecord{}, errors.New("fake: build is not pure")
	}
	prev := head
	for _, r := range append([]storage.AuditRecord{rec}, rec.More...) {
		if r.Seq != prev.Seq+1 {
			s.mu.Unlock()
			return storage.AuditRecord{}, fmt.Errorf("fake: seq %d after %d", r.Seq, prev.Seq)
		}
		c := cloneRec(r)
		c.More = nil
		s.recs = append(s.recs, c)
		prev = storage.AuditHead{Seq: r.Seq, Hash: r.Hash}
	}
	s.mu.Unlock()
	runtime.Gosched()
	return cloneRec(rec), nil
}

func (s *fakeStore) headLocked() storage.AuditHead {
	if len(s.recs) == 0 {
		return storage.AuditHead{Seq: 0, Hash: storage.GenesisHash}
	}
	last := s.recs[len(s.recs)-1]
	return storage.AuditHead{Seq: last.Seq, Hash: last.Hash}
}

func (s *fakeStore) ScanAudit(ctx context.Context, after uint64, fn func(storage.AuditRecord) (bool, error)) error {
	s.scans.Add(1)
	s.mu.Lock()
	recs := append([]storage.AuditRecord(nil), s.recs...)
	s.mu.Unlock()
	for _, r := range recs {
		if r.Seq <= after {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, err := fn(cloneRec(r))
		if err != nil || !ok {
			return err
		}
	}
	return nil
}

func (s *fakeStore) AuditHead(ctx context.Context) (storage.AuditHead, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.headLocked(), nil
}

// AuditAnchor: the fake never prunes.
func (s *fakeStore) AuditAnchor(context.Context) (storage.AuditHead, error) {
	return storage.AuditHead{Seq: 0, Hash: storage.GenesisHash}, nil
}

func cloneRec(r storage.AuditRecord) storage.AuditRecord {
	r.Data = bytes.Clone(r.Data)
	if r.More != nil {
		more := make([]storage.AuditRecord, len(r.More))
		for i, m := range r.More {
			more[i] = cloneRec(m)
		}
		r.More = more
	}
	return r
}

// truncateTo keeps the first n records (a store restored from an older
// backup).
func (s *fakeStore) truncateTo(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = s.recs[:n]
}

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time            { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration)   { c.ns.Add(int64(d)) }
func (c *clock) Set(t time.Time)           { c.ns.Store(t.UnixNano()) }
func testLogger(t testing.TB) *slog.Logger { return slog.New(slog.NewTextHandler(tWriter{t}, nil)) }

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// newTestLog opens a Log over store with a mirror in dir.
func newTestLog(t testing.TB, store Store, mirror string, c *clock) *Log {
	t.Helper()
	l, err := New(t.Context(), store, Options{MirrorPath: mirror, Logger: testLogger(t), Now: c.Now})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// sampleEvent is the n-th event of a varied test trail.
func sampleEvent(n int) Event {
	tenants := []string{"acme", "globex", "initech"}
	actions := []string{ActionTokenStore, ActionProxyRequest, ActionTokenRefresh, ActionAuthDenied}
	outcomes := []string{OutcomeSuccess, OutcomeFailure, OutcomeDenied}
	return Event{
		TenantID:      tenants[n%len(tenants)],
		IntegrationID: fmt.Sprintf("int-%d", n%5),
		Actor:         "spiffe://example.internal/app/crm-sync",
		OnBehalfOf:    fmt.Sprintf("user-%d", n%7),
		Action:        actions[n%len(actions)],
		Outcome:       outcomes[n%len(outcomes)],
		RequestID:     fmt.Sprintf("req-%04d", n),
		TargetHost:    "api.example.com",
		HTTPStatus:    200 + n%3,
		Detail:        fmt.Sprintf("event %d <&> é", n),
	}
}

// record appends n sample events.
func record(t testing.TB, l *Log, from, n int) []Event {
	t.Helper()
	out := make([]Event, 0, n)
	for i := from; i < from+n; i++ {
		ev, err := l.Record(t.Context(), sampleEvent(i))
		if err != nil {
			t.Fatalf("Record %d: %v", i, err)
		}
		out = append(out, ev)
	}
	return out
}

// export is the unfiltered NDJSON export of the store.
func export(t testing.TB, l *Log) []byte {
	t.Helper()
	var buf bytes.Buffer
	err := l.Query(t.Context(), Filter{Limit: MaxLimit}, func(line []byte) error {
		buf.Write(line)
		return nil
	})
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	return buf.Bytes()
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mirrorPath(t testing.TB) string { return filepath.Join(t.TempDir(), "audit.jsonl") }
