package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// [audit] retention: "0" or absent keeps everything; days and Go
// durations are accepted; anything else is refused at the key without
// echoing the value.
func TestAuditRetention(t *testing.T) {
	cfg, err := Parse([]byte(base), "/srv/vaultd", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Audit.Retention.Duration() != 0 || cfg.Audit.ArchiveDir != "" {
		t.Fatalf("defaults: retention %v, archive_dir %q", cfg.Audit.Retention.Duration(), cfg.Audit.ArchiveDir)
	}
	for in, want := range map[string]time.Duration{
		"0": 0, "400d": 400 * 24 * time.Hour, "1d": 24 * time.Hour, "720h": 720 * time.Hour, "1s": time.Second, "90m": 90 * time.Minute,
	} {
		cfg, err := Parse([]byte(base+"\n[audit]\nretention = \""+in+"\"\n"), "/srv/vaultd", ModeSyntax)
		if err != nil {
			t.Fatalf("retention %q: %v", in, err)
		}
		if got := cfg.Audit.Retention.Duration(); got != want {
			t.Fatalf("retention %q = %v, want %v", in, got, want)
		}
	}
	for _, in := range []string{`"0d"`, `"-1d"`, `"1.5d"`, `"d"`, `"400 d"`, `"+4d"`, `"-1h"`, `"0s"`, `"1y"`, `"100001d"`, `""`} {
		_, err := Parse([]byte(base+"\n[audit]\nretention = "+in+"\n"), "/srv/vaultd", ModeSyntax)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "audit.retention") {
			t.Fatalf("retention = %s: %v", in, err)
		}
	}
	if b, _ := NewRetention(400 * 24 * time.Hour).MarshalText(); string(b) != "400d" {
		t.Fatalf("MarshalText = %q", b)
	}
}

// [audit] archive_dir: an absolute path, cleaned; its parent must exist
// when vaultd starts.
func TestAuditArchiveDir(t *testing.T) {
	cfg, err := Parse([]byte(base+"\n[audit]\narchive_dir = \"/var/lib/vaultd/audit-archive/\"\n"), "/srv/vaultd", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Audit.ArchiveDir != "/var/lib/vaultd/audit-archive" {
		t.Fatalf("archive_dir = %q", cfg.Audit.ArchiveDir)
	}
	for _, in := range []string{`"audit-archive"`, `""`, `"./a"`, `1`} {
		_, err := Parse([]byte(base+"\n[audit]\narchive_dir = "+in+"\n"), "/srv/vaultd", ModeSyntax)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "audit.archive_dir") {
			t.Fatalf("archive_dir = %s: %v", in, err)
		}
	}
	dir := t.TempDir()
	ok := dir + "/archive"
	if err := checkDaemonArchive(t, ok); err != nil {
		t.Fatalf("archive_dir under an existing directory: %v", err)
	}
	if err := checkDaemonArchive(t, dir+"/missing/archive"); err == nil || !strings.Contains(err.Error(), "audit.archive_dir") {
		t.Fatalf("archive_dir under a missing directory: %v", err)
	}
}

// checkDaemonArchive validates the [audit] section alone as vaultd would.
func checkDaemonArchive(t *testing.T, dir string) error {
	t.Helper()
	cfg, err := Parse([]byte(base+"\n[audit]\narchive_dir = \""+dir+"\"\n"), "/srv/vaultd", ModeSyntax)
	if err != nil {
		return err
	}
	v := &validator{cfg: cfg, ix: cfg.ix, mode: ModeDaemon}
	return v.audit()
}
