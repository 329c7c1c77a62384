package config

import (
	"errors"
	"strings"
	"testing"
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
