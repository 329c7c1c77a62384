package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// [audit] verify_on_start: on unless the file says false, and a boolean.
func TestAuditVerifyOnStart(t *testing.T) {
	cfg, err := Parse([]byte(base), "/srv/vaultd", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Audit.VerifyOnStart {
		t.Fatal("verify_on_start must default to true")
	}
	cfg, err = Parse([]byte(base+"\n[audit]\nverify_on_start = false\n"), "/srv/vaultd", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Audit.VerifyOnStart {
		t.Fatal("verify_on_start = false ignored")
	}
	_, err = Parse([]byte(base+"\n[audit]\nverify_on_start = \"no\"\n"), "/srv/vaultd", ModeSyntax)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "audit.verify_on_start") {
		t.Fatalf("a string verify_on_start: %v", err)
	}
}

// [audit] checkpoint_interval: "1m" by default, a duration within 1s-24h.
func TestAuditCheckpointInterval(t *testing.T) {
	cfg, err := Parse([]byte(base), "/srv/vaultd", ModeSyntax)
	if err != nil || cfg.Audit.CheckpointInterval.Duration() != time.Minute {
		t.Fatalf("default checkpoint_interval = %v, %v; want 1m", cfg.Audit.CheckpointInterval, err)
	}
	cfg, err = Parse([]byte(base+"\n[audit]\ncheckpoint_interval = \"1s\"\n"), "/srv/vaultd", ModeSyntax)
	if err != nil || cfg.Audit.CheckpointInterval.Duration() != time.Second {
		t.Fatalf("checkpoint_interval = \"1s\": %v, %v", cfg.Audit.CheckpointInterval, err)
	}
	for _, bad := range []string{`"500ms"`, `"25h"`, `"0"`, `60`} {
		_, err = Parse([]byte(base+"\n[audit]\ncheckpoint_interval = "+bad+"\n"), "/srv/vaultd", ModeSyntax)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "audit.checkpoint_interval") {
			t.Errorf("checkpoint_interval = %s: %v, want a refusal at the key", bad, err)
		}
	}
}
