package audit

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWALRotation: a WAL that grew past its rotation size while events
// stay pending is rewritten with only the pending lines; when the rewrite
// fails (here: the temporary file's name is taken by a directory) the old
// WAL stays in use, whole, and nothing is lost: appends go on, and a
// crash followed by a replay still finds every event.
func TestWALRotation(t *testing.T) {
	for _, fail := range []bool{false, true} {
		name := "succeeds"
		if fail {
			name = "fails"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			store := openBolt(t, filepath.Join(dir, "vault.db"))
			wal := filepath.Join(dir, "vault.db.audit-wal")
			l, err := newBatchLog(t, store, wal, nil)
			if err != nil {
				t.Fatal(err)
			}
			l.walRotateAt = 1 // every trim with pending events rotates
			for i := range 10 {
				if _, err := l.Record(t.Context(), proxyEvent(i)); err != nil {
					t.Fatal(err)
				}
			}
			// Ten reach the store; five more stay pending.
			if err := l.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			for i := 10; i < 15; i++ {
				if _, err := l.Record(t.Context(), proxyEvent(i)); err != nil {
					t.Fatal(err)
				}
			}
			if fail {
				if err := os.Mkdir(wal+".tmp", 0o700); err != nil {
					t.Fatal(err)
				}
			}
			before := walLineCount(t, wal)
			l.chainMu.RLock()
			l.trimWAL()
			l.chainMu.RUnlock()
			after := walLineCount(t, wal)
			switch {
			case fail && after != before:
				t.Fatalf("a failed rotation changed the WAL: %d lines, was %d", after, before)
			case !fail && after != 5:
				t.Fatalf("rotated WAL has %d lines, want the 5 pending", after)
			}
			// Appends go on into whichever file is in use.
			if _, err := l.Record(t.Context(), proxyEvent(99)); err != nil {
				t.Fatal(err)
			}
			// Crash: a copy of the WAL as left, replayed by a new Log.
			crashed := filepath.Join(dir, "copy.audit-wal")
			if err := os.WriteFile(crashed, readFile(t, wal), 0o600); err != nil {
				t.Fatal(err)
			}
			l2, err := newBatchLog(t, store, crashed, nil)
			if err != nil {
				t.Fatal(err)
			}
			if l2.WALReplayed() != 6 {
				t.Fatalf("replayed %d events, want the 6 pending", l2.WALReplayed())
			}
			verifyStore(t, store, 16)
		})
	}
}
