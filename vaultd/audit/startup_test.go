package audit

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// editStored rewrites the stored event seq in place, as someone with write
// access to the database would. With rehash the event's hash (and the
// store's copy of it) is recomputed, so only the link to the next event
// can give the edit away.
func editStored(t *testing.T, s *fakeStore, seq uint64, rehash bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := &s.recs[seq-1]
	ev, err := ParseEvent(rec.Data)
	if err != nil {
		t.Fatal(err)
	}
	ev.Detail = "edited"
	if rehash {
		if ev.Hash, err = ComputeHash(ev); err != nil {
			t.Fatal(err)
		}
		rec.Hash = ev.Hash
	}
	if rec.Data, err = marshalLine(ev); err != nil {
		t.Fatal(err)
	}
}

// storedChain records n events into a fresh fakeStore through a Log that
// is closed again: the database as a restarted vaultd finds it.
func storedChain(t *testing.T, n int, mirror string) *fakeStore {
	t.Helper()
	s := &fakeStore{}
	l, err := New(t.Context(), s, Options{MirrorPath: mirror, Logger: testLogger(t), Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	record(t, l, 0, n)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return s
}

func startLog(t *testing.T, s Store, mirror string, tail uint64, reg prometheus.Registerer) (*Log, error) {
	t.Helper()
	l, err := New(t.Context(), s, Options{
		MirrorPath: mirror, Logger: testLogger(t), Now: newClock().Now,
		VerifyOnStart: true, VerifyTail: tail, Registerer: reg,
	})
	if err == nil {
		t.Cleanup(func() { _ = l.Close() })
	}
	return l, err
}

// waitBackground waits for the background part of the start-up check; the
// bound only keeps a hung test from hanging the suite.
func waitBackground(t *testing.T, l *Log) {
	t.Helper()
	if l.bgDone == nil {
		t.Fatal("no background verification was started")
	}
	select {
	case <-l.bgDone:
	case <-time.After(2 * time.Minute):
		t.Fatal("background verification did not finish")
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func wantStartRefused(t *testing.T, err error, seq uint64) {
	t.Helper()
	var ce *ChainError
	if !errors.As(err, &ce) || ce.Seq != seq {
		t.Fatalf("New = %v, want a refusal naming seq %d", err, seq)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, fmt.Sprintf("chain broken at seq %d", seq)) {
		t.Fatalf("refusal is not one line naming seq %d: %q", seq, msg)
	}
}

// The chain in the store is verified when the Log opens with
// VerifyOnStart: an edited event refuses the start naming its seq, before
// the mirror (the honest copy) is touched.
func TestVerifyOnStartRefusesTamperedStore(t *testing.T) {
	for _, seq := range []uint64{1, 5, chainN} {
		mirror := mirrorPath(t)
		s := storedChain(t, chainN, mirror)
		before := readFile(t, mirror)
		editStored(t, s, seq, false)
		_, err := startLog(t, s, mirror, 0, nil)
		wantStartRefused(t, err, seq)
		if got := readFile(t, mirror); string(got) != string(before) {
			t.Fatalf("seq %d: the mirror was rewritten from a tampered store", seq)
		}
		if m, _ := filepath.Glob(mirror + ".corrupt-*"); len(m) != 0 {
			t.Fatalf("seq %d: mirror renamed: %v", seq, m)
		}
	}
	// A recomputed hash moves the break to the next link.
	s := storedChain(t, chainN, "")
	editStored(t, s, 5, true)
	_, err := startLog(t, s, "", 0, nil)
	wantStartRefused(t, err, 6)

	// Without VerifyOnStart (tests, tools) nothing is checked.
	if _, err := New(t.Context(), s, Options{Logger: testLogger(t)}); err != nil {
		t.Fatalf("New without VerifyOnStart: %v", err)
	}
}

func TestVerifyOnStartCleanChain(t *testing.T) {
	for _, tail := range []uint64{0, 3} { // 0: the default, all of it at once
		s := storedChain(t, chainN, "")
		reg := prometheus.NewRegistry()
		l, err := startLog(t, s, "", tail, reg)
		if err != nil {
			t.Fatalf("tail %d: %v", tail, err)
		}
		if tail != 0 {
			waitBackground(t, l)
		}
		if v, b := gauge(t, reg, "vaultd_audit_chain_verified"), gauge(t, reg, "vaultd_audit_chain_broken_seq"); v != 1 || b != 0 {
			t.Fatalf("tail %d: verified %v, broken_seq %v", tail, v, b)
		}
		record(t, l, chainN, 1)
	}
	// An empty store verifies.
	if _, err := startLog(t, &fakeStore{}, "", 0, nil); err != nil {
		t.Fatal(err)
	}
}

// With a tail shorter than the chain, the newest events are verified before
// New returns and the rest in the background; a break found there is
// logged, exported as a metric and stops every later Record (fail closed:
// nothing is appended to a tampered trail).
func TestVerifyOnStartBackground(t *testing.T) {
	const tail = 3 // verified at once: seq 10..12; background: 1..9
	cases := []struct {
		name   string
		seq    uint64
		rehash bool
		want   uint64
	}{
		{"early event", 2, false, 2},
		{"last background event", 9, false, 9},
		{"rehashed last background event", 9, true, 10},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := storedChain(t, chainN, "")
			editStored(t, s, c.seq, c.rehash)
			reg := prometheus.NewRegistry()
			l, err := startLog(t, s, "", tail, reg)
			if err != nil {
				t.Fatalf("the tail is intact, New must succeed: %v", err)
			}
			waitBackground(t, l)
			if b := gauge(t, reg, "vaultd_audit_chain_broken_seq"); b != float64(c.want) {
				t.Fatalf("broken_seq %v, want %d", b, c.want)
			}
			if v := gauge(t, reg, "vaultd_audit_chain_verified"); v != 0 {
				t.Fatalf("verified %v", v)
			}
			var ce *ChainError
			if err := l.Broken(); !errors.As(err, &ce) || ce.Seq != c.want {
				t.Fatalf("Broken() = %v, want the break at seq %d (readiness reports it)", err, c.want)
			}
			_, err = l.Record(t.Context(), sampleEvent(99))
			if !errors.Is(err, ErrChainBroken) {
				t.Fatalf("Record after a break: %v", err)
			}
			if head, _ := s.AuditHead(t.Context()); head.Seq != chainN {
				t.Fatalf("an event was appended to a broken chain: head %d", head.Seq)
			}
		})
	}
	t.Run("break inside the tail refuses the start", func(t *testing.T) {
		for _, seq := range []uint64{10, chainN} {
			s := storedChain(t, chainN, "")
			editStored(t, s, seq, false)
			_, err := startLog(t, s, "", tail, nil)
			wantStartRefused(t, err, seq)
		}
	})
}

// Close stops a background verification that is still running.
func TestVerifyOnStartCloseStopsBackground(t *testing.T) {
	s := storedChain(t, 200, "")
	l, err := startLog(t, s, "", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.bgDone:
	default:
		t.Fatal("Close returned with the background verification still running")
	}
}
