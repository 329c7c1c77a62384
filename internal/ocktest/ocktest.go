// Package ocktest finds the openCryptoki software token a test run
// prepared, for tests that must pass on a token without AES-GCM, AES key
// wrap or EC.
//
// Unlike SoftHSM, openCryptoki's tokens live in one system-wide daemon
// (pkcsslotd) and a fixed slot, so tests cannot make throwaway tokens:
// scripts/ock.sh starts the daemon, initialises the soft token once per run
// and exports where it is (VAULTD_OCK_MODULE, VAULTD_OCK_TOKEN,
// VAULTD_OCK_PIN). Tests share that token, with each other and with other
// test processes running at the same time, so every test names its own
// keys (Token.KeyLabel): nothing one test creates is seen by another.
//
// Without those variables a test is skipped, saying how to get the token;
// with VAULTD_REQUIRE_OCK=1 (scripts/test.sh sets it) it fails instead, so
// CI never passes by skipping.
package ocktest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"testing"
)

// The environment scripts/ock.sh exports.
const (
	EnvModule  = "VAULTD_OCK_MODULE"
	EnvToken   = "VAULTD_OCK_TOKEN"
	EnvPIN     = "VAULTD_OCK_PIN"
	EnvRequire = "VAULTD_REQUIRE_OCK"
)

// ErrNoToken: the environment names no openCryptoki token.
var ErrNoToken = errors.New("ocktest: no openCryptoki token (run scripts/test.sh, or as root: eval \"$(scripts/ock.sh up)\")")

// Token is the prepared openCryptoki token.
type Token struct {
	Module string // the PKCS#11 module (libopencryptoki.so)
	Label  string // the token's label
	PIN    string // the user PIN (of a throwaway test token)
}

// Lookup reads the token from the environment: ErrNoToken when it names
// none, another error when it names one that is not there.
func Lookup() (Token, error) {
	tok := Token{Module: os.Getenv(EnvModule), Label: os.Getenv(EnvToken), PIN: os.Getenv(EnvPIN)}
	if tok.Module == "" && tok.Label == "" && tok.PIN == "" {
		return Token{}, ErrNoToken
	}
	if tok.Module == "" || tok.Label == "" || tok.PIN == "" {
		return Token{}, fmt.Errorf("ocktest: %s, %s and %s must all be set", EnvModule, EnvToken, EnvPIN)
	}
	if _, err := os.Stat(tok.Module); err != nil {
		return Token{}, fmt.Errorf("ocktest: %s: %w", EnvModule, err)
	}
	// The daemon's socket: without it every C_Initialize fails with a
	// misleading CKR_HOST_MEMORY.
	if _, err := os.Stat(SlotdSocket); err != nil {
		return Token{}, fmt.Errorf("ocktest: pkcsslotd is not running (%w); start it with scripts/ock.sh up", err)
	}
	return tok, nil
}

// SlotdSocket is where pkcsslotd listens; the module connects to it.
const SlotdSocket = "/run/pkcsslotd.socket"

// Required reports whether a missing token fails the test (VAULTD_REQUIRE_OCK=1).
func Required() bool { return os.Getenv(EnvRequire) == "1" }

// Need returns the token, or ends the test: a skip when there is none and
// it is not required, a failure otherwise.
func Need(t testing.TB) Token {
	t.Helper()
	tok, err := Lookup()
	switch {
	case err == nil:
		return tok
	case errors.Is(err, ErrNoToken) && !Required():
		t.Skip(err.Error())
	default:
		t.Fatal(err)
	}
	return Token{}
}

// KeyLabel is a fresh key label for one test (at most 32 bytes, with room
// for the "-audit" and tenant-key suffixes the backend adds).
func (Token) KeyLabel(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails: crypto/rand crashes the program instead
	return prefix + "-" + hex.EncodeToString(b)
}

// Env is what a child process (vaultd, vaultctl) needs to reach the token:
// nothing, because openCryptoki finds its daemon itself. It exists so the
// e2e harness treats both token kinds alike.
func (Token) Env() []string { return nil }
