package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/storage"
)

const chainN = 12

// chainLines records chainN events and returns the export split in lines.
func chainLines(t *testing.T) [][]byte {
	t.Helper()
	store := &fakeStore{}
	l := newTestLog(t, store, "", newClock())
	record(t, l, 0, chainN)
	exp := export(t, l)
	lines := bytes.Split(bytes.TrimSuffix(exp, []byte("\n")), []byte("\n"))
	if len(lines) != chainN {
		t.Fatalf("export has %d lines, want %d", len(lines), chainN)
	}
	return lines
}

func join(lines [][]byte) []byte {
	return append(bytes.Join(lines, []byte("\n")), '\n')
}

func wantChainError(t *testing.T, input []byte, seq uint64) *ChainError {
	t.Helper()
	_, err := Verify(bytes.NewReader(input))
	var ce *ChainError
	if !errors.As(err, &ce) {
		t.Fatalf("Verify error = %v, want *ChainError at seq %d", err, seq)
	}
	if ce.Seq != seq {
		t.Fatalf("ChainError at seq %d (%v), want seq %d", ce.Seq, ce, seq)
	}
	if !strings.Contains(ce.Error(), fmt.Sprintf("seq %d", seq)) {
		t.Fatalf("message %q does not name seq %d", ce.Error(), seq)
	}
	return ce
}

func TestChainVerifies(t *testing.T) {
	store := &fakeStore{}
	path := mirrorPath(t)
	l := newTestLog(t, store, path, newClock())
	evs := record(t, l, 0, chainN)
	exp := export(t, l)
	res, err := Verify(bytes.NewReader(exp))
	if err != nil {
		t.Fatal(err)
	}
	head, _ := store.AuditHead(t.Context())
	want := VerifyResult{Events: chainN, FirstSeq: 1, LastSeq: chainN, LastHash: head.Hash, Anchored: true}
	if res != want {
		t.Fatalf("Verify = %+v, want %+v", res, want)
	}
	if got := readFile(t, path); !bytes.Equal(got, exp) {
		t.Fatalf("mirror differs from the export")
	}
	// Returned events are what was stored.
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
		h, err := ComputeHash(ev)
		if err != nil || h != ev.Hash {
			t.Fatalf("seq %d: ComputeHash = %s, %v; event carries %s", ev.Seq, h, err, ev.Hash)
		}
	}
	if evs[0].PrevHash != storage.GenesisHash || evs[1].PrevHash != evs[0].Hash {
		t.Fatalf("prev_hash links wrong")
	}
	if res, err := l.VerifyStore(t.Context()); err != nil || res != want {
		t.Fatalf("VerifyStore = %+v, %v", res, err)
	}
}

// Editing any field of any line breaks the chain exactly at that line.
func TestTamperAnyFieldOfAnyLine(t *testing.T) {
	lines := chainLines(t)
	for k := range lines {
		seq := uint64(k + 1)
		for _, field := range contractFields {
			var m map[string]any
			dec := json.NewDecoder(bytes.NewReader(lines[k]))
			dec.UseNumber()
			if err := dec.Decode(&m); err != nil {
				t.Fatal(err)
			}
			switch v := m[field].(type) {
			case json.Number:
				n, _ := v.Int64()
				m[field] = n + 1
			case string:
				switch field {
				case "hash", "prev_hash":
					b := []byte(v)
					b[10] = "01"[b[10]&1] // flip one hex digit, stays hex
					if string(b) == v {
						b[10] = 'f'
					}
					m[field] = string(b)
				case "time":
					m[field] = strings.Replace(v, "2026", "2025", 1)
				default:
					m[field] = v + "x"
				}
			default:
				t.Fatalf("field %s has type %T", field, v)
			}
			edited, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			tampered := make([][]byte, len(lines))
			copy(tampered, lines)
			tampered[k] = edited
			want := seq
			if k == 0 && field == "seq" {
				want = 2 // the first line is taken at its word: it now claims seq 2
			}
			wantChainError(t, join(tampered), want)
		}
		// Removing a field, or adding one, also breaks it.
		for _, edit := range []func(map[string]any){
			func(m map[string]any) { delete(m, "detail") },
			func(m map[string]any) { m["extra"] = "x" },
		} {
			var m map[string]any
			dec := json.NewDecoder(bytes.NewReader(lines[k]))
			dec.UseNumber()
			_ = dec.Decode(&m)
			edit(m)
			edited, _ := json.Marshal(m)
			tampered := append([][]byte(nil), lines...)
			tampered[k] = edited
			wantChainError(t, join(tampered), seq)
		}
	}
}

// An attacker who edits line k and recomputes its hash breaks the link at
// k+1; only rewriting every later line too hides an edit (see package doc).
func TestTamperWithRecomputedHash(t *testing.T) {
	lines := chainLines(t)
	for k := 0; k < len(lines)-1; k++ {
		ev, err := ParseEvent(lines[k])
		if err != nil {
			t.Fatal(err)
		}
		ev.Detail = "rewritten"
		if ev.Hash, err = ComputeHash(ev); err != nil {
			t.Fatal(err)
		}
		edited, _ := marshalLine(ev)
		tampered := append([][]byte(nil), lines...)
		tampered[k] = edited
		wantChainError(t, join(tampered), uint64(k+2))
	}
}

func TestDeleteSwapInsert(t *testing.T) {
	lines := chainLines(t)
	// Deleting an interior line k: the chain breaks at the missing seq.
	for k := 1; k < len(lines)-1; k++ {
		tampered := append(append([][]byte(nil), lines[:k]...), lines[k+1:]...)
		ce := wantChainError(t, join(tampered), uint64(k+1))
		if ce.Line != k+1 {
			t.Fatalf("delete %d: line %d, want %d", k, ce.Line, k+1)
		}
	}
	// Swapping lines k and k+1 breaks at seq k+1 (0-based k).
	for k := 0; k < len(lines)-1; k++ {
		tampered := append([][]byte(nil), lines...)
		tampered[k], tampered[k+1] = tampered[k+1], tampered[k]
		wantChainError(t, join(tampered), uint64(k+1))
	}
	// Duplicating a line breaks at the seq after it.
	for k := 0; k < len(lines); k++ {
		tampered := append(append(append([][]byte(nil), lines[:k+1]...), lines[k]), lines[k+1:]...)
		wantChainError(t, join(tampered), uint64(k+2))
	}

	// Documented limits: dropping the tail, or the head, leaves a valid
	// (shorter, or unanchored) chain; only an external anchor catches it.
	res, err := Verify(bytes.NewReader(join(lines[:len(lines)-1])))
	if err != nil || res.LastSeq != chainN-1 || !res.Anchored {
		t.Fatalf("truncated tail: %+v, %v", res, err)
	}
	res, err = Verify(bytes.NewReader(join(lines[1:])))
	if err != nil || res.FirstSeq != 2 || res.Anchored {
		t.Fatalf("dropped head: %+v, %v", res, err)
	}
}

func TestVerifyInputShapes(t *testing.T) {
	lines := chainLines(t)
	all := join(lines)

	t.Run("empty", func(t *testing.T) {
		res, err := Verify(bytes.NewReader(nil))
		if err != nil || res.Events != 0 {
			t.Fatalf("%+v, %v", res, err)
		}
	})
	t.Run("trailing blank lines and no final newline", func(t *testing.T) {
		for _, in := range [][]byte{append(bytes.Clone(all), "\n \n"...), bytes.TrimSuffix(all, []byte("\n"))} {
			res, err := Verify(bytes.NewReader(in))
			if err != nil || res.Events != chainN {
				t.Fatalf("%+v, %v", res, err)
			}
		}
	})
	t.Run("blank line inside", func(t *testing.T) {
		in := join(append(append(append([][]byte(nil), lines[:3]...), []byte("")), lines[3:]...))
		ce := wantChainError(t, in, 4)
		if ce.Line != 4 {
			t.Fatalf("line %d", ce.Line)
		}
	})
	t.Run("bad JSON names the line and the expected seq", func(t *testing.T) {
		tampered := append([][]byte(nil), lines...)
		tampered[4] = []byte(`{"seq":5,`)
		ce := wantChainError(t, join(tampered), 5)
		if ce.Line != 5 || !strings.Contains(ce.Error(), "line 5") {
			t.Fatalf("%v", ce)
		}
		_, err := Verify(strings.NewReader("not json\n"))
		var ce2 *ChainError
		if !errors.As(err, &ce2) || ce2.Seq != 0 || ce2.Line != 1 {
			t.Fatalf("first line garbage: %v", err)
		}
	})
	t.Run("first line seq 1 must start from genesis", func(t *testing.T) {
		ev, _ := ParseEvent(lines[0])
		ev.PrevHash = strings.Repeat("ab", 32)
		ev.Hash, _ = ComputeHash(ev)
		line, _ := marshalLine(ev)
		ce := wantChainError(t, append(line, '\n'), 1)
		if !strings.Contains(ce.Reason, "genesis") {
			t.Fatalf("%v", ce)
		}
	})
	t.Run("duplicate and case-variant keys refused", func(t *testing.T) {
		for _, extra := range []string{`,"detail":"other"`, `,"Detail":"other"`, `,"SEQ":1`} {
			line := append(bytes.TrimSuffix(bytes.Clone(lines[0]), []byte("}")), extra+"}"...)
			wantChainError(t, append(line, '\n'), 1)
		}
	})
	t.Run("non-integer or out of range seq", func(t *testing.T) {
		for _, seq := range []string{"1.5", "-1", "0", "1e300", `"1"`, "9007199254740993"} {
			line := bytes.Replace(bytes.Clone(lines[0]), []byte(`"seq":1,`), []byte(`"seq":`+seq+`,`), 1)
			if _, err := Verify(bytes.NewReader(line)); !errors.As(err, new(*ChainError)) {
				t.Fatalf("seq %s: %v", seq, err)
			}
		}
	})
	t.Run("over-long line", func(t *testing.T) {
		in := append(bytes.Clone(all), bytes.Repeat([]byte("x"), MaxLineBytes+10)...)
		wantChainError(t, in, chainN+1)
	})
	t.Run("not an object", func(t *testing.T) {
		for _, in := range []string{"[]\n", "1\n", `"x"` + "\n", "null\n"} {
			if _, err := Verify(strings.NewReader(in)); !errors.As(err, new(*ChainError)) {
				t.Fatalf("%q: %v", in, err)
			}
		}
	})
}

// An export filtered by tenant is not chain-verifiable: Verify reports
// the first gap (documented).
func TestFilteredExportDoesNotChain(t *testing.T) {
	store := &fakeStore{}
	l := newTestLog(t, store, "", newClock())
	record(t, l, 0, 9) // tenants cycle acme, globex, initech
	var buf bytes.Buffer
	if err := l.Query(t.Context(), Filter{TenantID: "acme"}, func(line []byte) error {
		buf.Write(line)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantChainError(t, buf.Bytes(), 2) // lines are seq 1, 4, 7
}

func TestSanitize(t *testing.T) {
	store := &fakeStore{}
	l := newTestLog(t, store, "", newClock())
	ctx := t.Context()
	for _, bad := range []Event{
		{Action: "", Outcome: OutcomeSuccess},
		{Action: "Token.Store", Outcome: OutcomeSuccess},
		{Action: "token", Outcome: OutcomeSuccess},
		{Action: ActionTokenStore, Outcome: "ok"},
		{Action: ActionTokenStore, Outcome: OutcomeSuccess, HTTPStatus: 42},
	} {
		if _, err := l.Record(ctx, bad); !errors.Is(err, ErrInvalidEvent) {
			t.Fatalf("%+v: err %v, want ErrInvalidEvent", bad, err)
		}
	}
	if n := len(store.recs); n != 0 {
		t.Fatalf("%d invalid events stored", n)
	}

	ev, err := l.Record(ctx, Event{
		Action: ActionAuthDenied, Outcome: OutcomeDenied,
		IntegrationID: strings.Repeat("é", 200), // 400 bytes, from a hostile path
		Detail:        "bad \xff utf8 " + strings.Repeat("d", 5000),
		Seq:           99, Hash: "forged", PrevHash: "forged",
	})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 1 || ev.PrevHash != storage.GenesisHash || ev.Hash == "forged" {
		t.Fatalf("caller-set chain fields kept: %+v", ev)
	}
	if len(ev.IntegrationID) > maxID || !strings.HasSuffix(ev.IntegrationID, "…") || !strings.HasPrefix(ev.IntegrationID, "éé") {
		t.Fatalf("integration_id not clamped: %d bytes %q", len(ev.IntegrationID), ev.IntegrationID)
	}
	if len(ev.Detail) > maxDetail || !strings.Contains(ev.Detail, "\uFFFD") {
		t.Fatalf("detail not clamped/repaired: %d bytes", len(ev.Detail))
	}
	stored, err := ParseEvent(store.recs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if stored != ev {
		t.Fatalf("returned event differs from stored:\n%+v\n%+v", ev, stored)
	}
	if _, err := Verify(bytes.NewReader(export(t, l))); err != nil {
		t.Fatal(err)
	}
}

func TestRecordStoreFailureFailsClosed(t *testing.T) {
	store := &fakeStore{}
	path := mirrorPath(t)
	l := newTestLog(t, store, path, newClock())
	record(t, l, 0, 2)
	boom := errors.New("disk on fire")
	store.failErr = boom
	if _, err := l.Record(t.Context(), sampleEvent(3)); !errors.Is(err, boom) {
		t.Fatalf("err %v, want the store's error", err)
	}
	store.failErr = nil
	if got := bytes.Count(readFile(t, path), []byte("\n")); got != 2 {
		t.Fatalf("mirror has %d lines, want 2", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Record(t.Context(), sampleEvent(4)); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
