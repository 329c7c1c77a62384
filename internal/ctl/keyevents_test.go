package ctl

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/config"
)

func keyEventsConfig(t *testing.T) *config.Config {
	t.Helper()
	dir := t.TempDir()
	doc := "[server]\nlisten = \"127.0.0.1:1\"\ntls_cert = \"c\"\ntls_key = \"k\"\nclient_ca = \"ca\"\n" +
		"[hsm]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin_file = \"p\"\nkek_label = \"vaultd-kek\"\n" +
		"[storage]\npath = \"vault.db\"\nlock_timeout = \"100ms\"\n"
	cfg, err := config.Parse([]byte(doc), dir, config.ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func trail(t *testing.T, path string) []audit.Event {
	t.Helper()
	st, err := bolt.Open(t.Context(), path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l, err := audit.New(t.Context(), st, audit.Options{VerifyOnStart: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var evs []audit.Event
	if err := l.Query(t.Context(), audit.Filter{}, func(line []byte) error {
		ev, err := audit.ParseEvent(line)
		evs = append(evs, ev)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return evs
}

var quiet = slog.New(slog.DiscardHandler)

// With the database free, key.create goes straight into the trail.
func TestRecordKeyEventsDirect(t *testing.T) {
	cfg := keyEventsConfig(t)
	evs := []audit.KeyCreated{
		{Time: time.Now(), Actor: audit.ActorVaultctl, Kind: audit.KeyKindKEK, Label: "vaultd-kek", Version: 1},
		{Time: time.Now(), Actor: audit.ActorVaultctl, Kind: audit.KeyKindAuditSigning, Label: "vaultd-kek-audit"},
	}
	msg, err := recordKeyEvents(t.Context(), cfg, evs, nil, quiet)
	if err != nil || !strings.Contains(msg, "2 event(s) recorded") {
		t.Fatalf("%q, %v", msg, err)
	}
	got := trail(t, cfg.Storage.Path)
	if len(got) != 2 || got[0].Action != audit.ActionKeyCreate || got[0].Detail != "kek label=vaultd-kek version=1" ||
		got[1].Detail != "audit_signing_key label=vaultd-kek-audit" || got[0].Actor != "vaultctl" || got[1].Outcome != audit.OutcomeSuccess {
		t.Fatalf("trail %+v", got)
	}
	if msg, err := recordKeyEvents(t.Context(), cfg, nil, nil, quiet); err != nil || msg != "" {
		t.Fatalf("no events: %q, %v", msg, err)
	}
}

// With the database held (vaultd running), the events wait beside it until
// vaultd records them; a later direct run records earlier pending ones
// first.
func TestRecordKeyEventsPending(t *testing.T) {
	cfg := keyEventsConfig(t)
	holder, err := bolt.Open(t.Context(), cfg.Storage.Path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := recordKeyEvents(t.Context(), cfg, []audit.KeyCreated{
		{Time: time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC), Actor: audit.ActorVaultctl, Kind: audit.KeyKindKEK, Label: "vaultd-kek", Version: 2},
	}, nil, quiet)
	pending := audit.PendingPath(cfg.Storage.Path)
	if err != nil || !strings.Contains(msg, pending) {
		t.Fatalf("%q, %v", msg, err)
	}
	fi, err := os.Stat(pending)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pending file %v, %v", fi, err)
	}
	data, _ := os.ReadFile(pending)
	if !strings.Contains(string(data), `"label":"vaultd-kek"`) || !strings.Contains(string(data), `"version":2`) {
		t.Fatalf("pending file: %s", data)
	}
	holder.Close()

	// The next vaultctl run with the database free records both, oldest first.
	msg, err = recordKeyEvents(t.Context(), cfg, []audit.KeyCreated{
		{Time: time.Now(), Actor: audit.ActorVaultctl, Kind: audit.KeyKindKEK, Label: "vaultd-kek", Version: 3},
	}, nil, quiet)
	if err != nil {
		t.Fatalf("%q, %v", msg, err)
	}
	got := trail(t, cfg.Storage.Path)
	if len(got) != 2 || got[0].Detail != "kek label=vaultd-kek version=2 pending_since=2026-05-01T08:00:00Z" ||
		got[1].Detail != "kek label=vaultd-kek version=3" {
		t.Fatalf("trail %+v", got)
	}
	if _, err := os.Stat(pending); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("pending file left: %v", err)
	}
}

// A WAL a crashed vaultd left is replayed before the key event; none is
// created when there is none.
func TestRecordKeyEventsNoNewWAL(t *testing.T) {
	cfg := keyEventsConfig(t)
	if _, err := recordKeyEvents(t.Context(), cfg, []audit.KeyCreated{
		{Time: time.Now(), Actor: audit.ActorVaultctl, Kind: audit.KeyKindKEK, Label: "vaultd-kek", Version: 1},
	}, nil, quiet); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Clean(cfg.Storage.Path + ".audit-wal")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a WAL was created: %v", err)
	}
}
