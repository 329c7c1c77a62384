package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// [audit] sync and sync_interval: "batch" and 10ms by default, "always" or
// "batch" accepted, anything else refused at the key.
func TestAuditSync(t *testing.T) {
	cfg, err := Parse([]byte(base), "/srv/vaultd", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Audit.Sync != SyncBatch || cfg.Audit.SyncInterval.Duration() != 10*time.Millisecond {
		t.Fatalf("defaults: sync %q, sync_interval %v", cfg.Audit.Sync, cfg.Audit.SyncInterval.Duration())
	}
	for _, c := range []struct {
		body string
		sync string
		iv   time.Duration
	}{
		{`sync = "always"`, SyncAlways, 10 * time.Millisecond},
		{"sync = \"batch\"\nsync_interval = \"250ms\"", SyncBatch, 250 * time.Millisecond},
		{`sync_interval = "1s"`, SyncBatch, time.Second},
	} {
		cfg, err := Parse([]byte(base+"\n[audit]\n"+c.body+"\n"), "/srv/vaultd", ModeSyntax)
		if err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
		if cfg.Audit.Sync != c.sync || cfg.Audit.SyncInterval.Duration() != c.iv {
			t.Fatalf("%s: sync %q, sync_interval %v", c.body, cfg.Audit.Sync, cfg.Audit.SyncInterval.Duration())
		}
	}
	for _, c := range []struct{ body, key string }{
		{`sync = "never"`, "audit.sync"},
		{`sync = ""`, "audit.sync"},
		{`sync = "ALWAYS"`, "audit.sync"},
		{`sync = 1`, "audit.sync"},
		{`sync_interval = "0s"`, "audit.sync_interval"},
		{`sync_interval = "2s"`, "audit.sync_interval"},
		{`sync_interval = "10"`, "audit.sync_interval"},
	} {
		_, err := Parse([]byte(base+"\n[audit]\n"+c.body+"\n"), "/srv/vaultd", ModeSyntax)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.key) {
			t.Fatalf("%s: %v", c.body, err)
		}
	}
}
