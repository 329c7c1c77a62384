package ocktest

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestLookupEnv(t *testing.T) {
	t.Setenv(EnvModule, "")
	t.Setenv(EnvToken, "")
	t.Setenv(EnvPIN, "")
	if _, err := Lookup(); !errors.Is(err, ErrNoToken) {
		t.Fatalf("no variables: %v, want ErrNoToken", err)
	}
	t.Setenv(EnvToken, "vaultd-test")
	if _, err := Lookup(); err == nil || errors.Is(err, ErrNoToken) {
		t.Fatalf("half set: %v, want an error naming the variables", err)
	}
	t.Setenv(EnvPIN, "12345678")
	t.Setenv(EnvModule, filepath.Join(t.TempDir(), "nope.so"))
	if _, err := Lookup(); err == nil || !strings.Contains(err.Error(), EnvModule) {
		t.Fatalf("missing module: %v, want an error naming %s", err, EnvModule)
	}
}

func TestRequired(t *testing.T) {
	t.Setenv(EnvRequire, "1")
	if !Required() {
		t.Fatal("VAULTD_REQUIRE_OCK=1 is not required")
	}
	t.Setenv(EnvRequire, "")
	if Required() {
		t.Fatal("unset VAULTD_REQUIRE_OCK is required")
	}
}

func TestKeyLabelUnique(t *testing.T) {
	var tok Token
	a, b := tok.KeyLabel("kek"), tok.KeyLabel("kek")
	if a == b || !strings.HasPrefix(a, "kek-") {
		t.Fatalf("labels %q, %q", a, b)
	}
	// The backend appends "-audit" and tenant suffixes; CKA_LABEL has room.
	if len(a)+len("-audit") > 32 {
		t.Fatalf("label %q too long", a)
	}
}
