package audit

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func pendingEvents(t *testing.T, store *fakeStore) []Event {
	t.Helper()
	store.mu.Lock()
	defer store.mu.Unlock()
	var out []Event
	for _, r := range store.recs {
		ev, err := ParseEvent(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// Events left while the store was held are recorded in order, with when
// they happened, and the file is gone afterwards.
func TestRecordPending(t *testing.T) {
	path := PendingPath(filepath.Join(t.TempDir(), "vault.db"))
	at := time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)
	if err := AppendPending(path, []KeyCreated{
		{Time: at, Actor: ActorVaultctl, Kind: KeyKindKEK, Label: "vaultd-kek", Version: 1},
		{Time: at, Actor: ActorVaultctl, Kind: KeyKindAuditSigning, Label: "vaultd-kek-audit"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := AppendPending(path, []KeyCreated{{Time: at.Add(time.Hour), Actor: ActorVaultctl, Kind: KeyKindKEK, Label: "vaultd-kek", Version: 2}}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pending file: %v %v", fi, err)
	}
	data, _ := os.ReadFile(path)
	if n := strings.Count(string(data), "\n"); n != 3 {
		t.Fatalf("%d lines: %s", n, data)
	}

	store := &fakeStore{}
	l := newTestLog(t, store, "", newClock())
	n, err := l.RecordPending(t.Context(), path)
	if err != nil || n != 3 {
		t.Fatalf("RecordPending = %d, %v", n, err)
	}
	evs := pendingEvents(t, store)
	want := []string{
		"kek label=vaultd-kek version=1 pending_since=2026-05-01T08:00:00Z",
		"audit_signing_key label=vaultd-kek-audit pending_since=2026-05-01T08:00:00Z",
		"kek label=vaultd-kek version=2 pending_since=2026-05-01T09:00:00Z",
	}
	if len(evs) != len(want) {
		t.Fatalf("%d events", len(evs))
	}
	for i, ev := range evs {
		if ev.Action != ActionKeyCreate || ev.Outcome != OutcomeSuccess || ev.Actor != ActorVaultctl || ev.Detail != want[i] || ev.TenantID != "" {
			t.Errorf("event %d = %+v", i, ev)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("pending file left behind: %v", err)
	}
	// Nothing left: nothing recorded.
	if n, err := l.RecordPending(t.Context(), path); err != nil || n != 0 || len(pendingEvents(t, store)) != 3 {
		t.Fatalf("second RecordPending = %d, %v", n, err)
	}
}

// A line that does not parse is dropped and said so, without its text.
func TestRecordPendingMalformed(t *testing.T) {
	path := PendingPath(filepath.Join(t.TempDir(), "vault.db"))
	if err := AppendPending(path, []KeyCreated{{Time: time.Now(), Actor: ActorVaultctl, Kind: KeyKindKEK, Label: "k", Version: 3}}); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("{\"kind\":\"kek\",\"label\":\"secret-looking-text\"}\nnot json\n")
	f.Close()
	store := &fakeStore{}
	l := newTestLog(t, store, "", newClock())
	if n, err := l.RecordPending(t.Context(), path); err != nil || n != 1 {
		t.Fatalf("RecordPending = %d, %v", n, err)
	}
	evs := pendingEvents(t, store)
	if len(evs) != 2 || evs[1].Outcome != OutcomeFailure || evs[1].Detail != "pending events file: 2 malformed line(s) dropped" ||
		strings.Contains(evs[1].Detail, "secret-looking") {
		t.Fatalf("events %+v", evs)
	}
}

// A store failure keeps what was not recorded for the next try.
func TestRecordPendingStoreFailure(t *testing.T) {
	path := PendingPath(filepath.Join(t.TempDir(), "vault.db"))
	if err := AppendPending(path, []KeyCreated{{Time: time.Now(), Actor: ActorVaultctl, Kind: KeyKindKEK, Label: "k", Version: 1}}); err != nil {
		t.Fatal(err)
	}
	store := &fakeStore{}
	l := newTestLog(t, store, "", newClock())
	store.mu.Lock()
	store.failErr = errors.New("disk full")
	store.mu.Unlock()
	if n, err := l.RecordPending(t.Context(), path); err == nil || n != 0 {
		t.Fatalf("RecordPending = %d, %v", n, err)
	}
	store.mu.Lock()
	store.failErr = nil
	store.mu.Unlock()
	if n, err := l.RecordPending(t.Context(), path); err != nil || n != 1 {
		t.Fatalf("retry = %d, %v", n, err)
	}
}

func TestAppendPendingRefuses(t *testing.T) {
	dir := t.TempDir()
	path := PendingPath(filepath.Join(dir, "vault.db"))
	now := time.Now()
	for _, k := range []KeyCreated{
		{Time: now, Actor: ActorVaultctl, Kind: "dek", Label: "x", Version: 1},
		{Time: now, Actor: ActorVaultctl, Kind: KeyKindKEK, Label: "", Version: 1},
		{Time: now, Actor: ActorVaultctl, Kind: KeyKindKEK, Label: "a b", Version: 1},
		{Time: now, Actor: ActorVaultctl, Kind: KeyKindKEK, Label: "k"}, // no version
		{Time: now, Actor: "", Kind: KeyKindAuditSigning, Label: "k"},
		{Actor: ActorVaultctl, Kind: KeyKindAuditSigning, Label: "k"},
	} {
		if err := AppendPending(path, []KeyCreated{k}); !errors.Is(err, ErrPendingInvalid) {
			t.Errorf("%+v: %v", k, err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a refused event created the file")
	}
	// Never through a symlink.
	target := filepath.Join(dir, "elsewhere")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if err := AppendPending(path, []KeyCreated{{Time: now, Actor: ActorVaultctl, Kind: KeyKindAuditSigning, Label: "k"}}); err == nil {
		t.Fatal("wrote through a symlink")
	}
	if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("symlink target created")
	}
}

// A writer that got the file just before a reader removed it notices, so
// its events go to a new file rather than to the unlinked one.
func TestPendingLockCurrent(t *testing.T) {
	path := PendingPath(filepath.Join(t.TempDir(), "vault.db"))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ok, err := lockCurrent(f, path); err != nil || !ok {
		t.Fatalf("lockCurrent = %v, %v", ok, err)
	}
	g, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	f.Close() // releases the lock
	if ok, err := lockCurrent(g, path); err != nil || ok {
		t.Fatalf("after removal lockCurrent = %v, %v", ok, err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, err := lockCurrent(g, path); err != nil || ok {
		t.Fatalf("after replacement lockCurrent = %v, %v", ok, err)
	}
}

// Anything at the pending path but a plain file is refused, and so is a
// line naming another actor or a label with detail separators: whoever
// can write the database's directory cannot hang start-up, truncate
// another file through a hard link, or choose whom the trail names.
func TestPendingFileHardened(t *testing.T) {
	dir := t.TempDir()
	store := &fakeStore{}
	l := newTestLog(t, store, "", newClock())

	fifo := PendingPath(filepath.Join(dir, "fifo.db"))
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.RecordPending(t.Context(), fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("FIFO: %v", err)
	}
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	linked := PendingPath(filepath.Join(dir, "link.db"))
	if err := os.Link(target, linked); err != nil {
		t.Fatal(err)
	}
	if _, err := l.RecordPending(t.Context(), linked); err == nil || !strings.Contains(err.Error(), "links") {
		t.Fatalf("hard link: %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me\n" {
		t.Fatalf("the linked file changed: %q", b)
	}
	for _, k := range []KeyCreated{
		{Time: time.Now(), Actor: "root", Kind: KeyKindKEK, Label: "k", Version: 1},
		{Time: time.Now(), Actor: ActorVaultctl, Kind: KeyKindKEK, Label: "k;actor=x", Version: 1},
	} {
		if err := AppendPending(PendingPath(filepath.Join(dir, "x.db")), []KeyCreated{k}); !errors.Is(err, ErrPendingInvalid) {
			t.Fatalf("AppendPending(%+v) = %v", k, err)
		}
	}
	if len(pendingEvents(t, store)) != 0 {
		t.Fatal("something was recorded")
	}
}
