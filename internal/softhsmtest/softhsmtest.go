// Package softhsmtest makes throwaway SoftHSMv2 tokens for tests.
//
// SoftHSM reads SOFTHSM2_CONF once, at C_Initialize, and only sees the tokens
// that exist at that moment. So:
//
//   - A test binary that loads the module in-process calls Setup from
//     TestMain: it writes a softhsm2.conf into a fresh temp dir and points
//     SOFTHSM2_CONF at it for the whole process, before anything loads the
//     module.
//   - NewToken creates a token in that dir with softhsm2-util. A module that is
//     already initialised does not see it until it is finalised and
//     initialised again. crypto11 (under pkcs11.Open) refcounts the module per
//     path and finalises it when the last Context closes, so the rule for
//     tests is: create the tokens you need first, then open keyrings, and
//     close every keyring (t.Cleanup) before the next test creates a token.
//     Tests that use this package therefore must not run in parallel with
//     each other while holding keyrings open.
//   - Tests that start another process (e2e: vaultd, vaultctl) use NewConf
//     for an independent conf dir that does not touch this process's
//     environment, and pass Conf.Env() (SOFTHSM2_CONF=...) to the child.
//
// softhsm2-util missing is a test failure, never a skip: scripts/test.sh
// (via scripts/deps.sh) installs it.
package softhsmtest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// ModuleCandidates are the places SoftHSMv2's PKCS#11 module is installed on
// Debian/Ubuntu (and compatible) hosts, in the order tried. SOFTHSM2_MODULE,
// if set, wins.
var ModuleCandidates = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

const installHint = "run scripts/test.sh (scripts/deps.sh installs softhsm2 and opensc)"

// Module returns the path of the SoftHSMv2 PKCS#11 module.
func Module() (string, error) {
	if m := os.Getenv("SOFTHSM2_MODULE"); m != "" {
		if _, err := os.Stat(m); err != nil {
			return "", fmt.Errorf("softhsmtest: SOFTHSM2_MODULE=%s: %w", m, err)
		}
		return m, nil
	}
	for _, m := range ModuleCandidates {
		if _, err := os.Stat(m); err == nil {
			return m, nil
		}
	}
	return "", fmt.Errorf("softhsmtest: libsofthsm2.so not found in %v; %s", ModuleCandidates, installHint)
}

// Util returns the path of softhsm2-util.
func Util() (string, error) {
	p, err := exec.LookPath("softhsm2-util")
	if err != nil {
		return "", fmt.Errorf("softhsmtest: softhsm2-util not found; %s", installHint)
	}
	return p, nil
}

// Conf is one SoftHSM configuration: a softhsm2.conf and its token dir.
type Conf struct {
	Path     string // the softhsm2.conf file
	TokenDir string // directories.tokendir
	Module   string // the PKCS#11 module to load with it
}

// Env is the environment entry a child process needs to use this Conf.
func (c Conf) Env() string { return "SOFTHSM2_CONF=" + c.Path }

// Token is one initialised token.
type Token struct {
	Module   string // PKCS#11 module path
	Label    string // token label (unique per call)
	PIN      string // user PIN (random)
	SOPin    string // security officer PIN (random)
	ConfPath string // softhsm2.conf this token lives under
	TokenDir string // its directories.tokendir
}

// Env is the environment entry a child process needs to see this token.
func (t Token) Env() string { return "SOFTHSM2_CONF=" + t.ConfPath }

// writeConf creates a softhsm2.conf in dir with a tokens/ subdir.
func writeConf(dir string) (Conf, error) {
	mod, err := Module()
	if err != nil {
		return Conf{}, err
	}
	if _, err := Util(); err != nil {
		return Conf{}, err
	}
	tokDir := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokDir, 0o700); err != nil {
		return Conf{}, fmt.Errorf("softhsmtest: %w", err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := "directories.tokendir = " + tokDir + "\n" +
		"objectstore.backend = file\n" +
		"log.level = ERROR\n" +
		"slots.removable = false\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return Conf{}, fmt.Errorf("softhsmtest: %w", err)
	}
	return Conf{Path: conf, TokenDir: tokDir, Module: mod}, nil
}

// NewConf makes an independent SoftHSM configuration in t.TempDir(). It does
// not change this process's environment: it is for tokens used by child
// processes (or by tests that set SOFTHSM2_CONF themselves).
func NewConf(t testing.TB) Conf {
	t.Helper()
	c, err := writeConf(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewToken initialises a token with a unique label and random PINs under c.
func (c Conf) NewToken(t testing.TB) Token {
	t.Helper()
	tok, err := c.newToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (c Conf) newToken() (Token, error) {
	util, err := Util()
	if err != nil {
		return Token{}, err
	}
	tok := Token{
		Module:   c.Module,
		Label:    "t-" + randHex(8), // labels are at most 32 bytes
		PIN:      randHex(12),
		SOPin:    randHex(12),
		ConfPath: c.Path,
		TokenDir: c.TokenDir,
	}
	cmd := exec.Command(util, "--init-token", "--free", "--label", tok.Label, "--pin", tok.PIN, "--so-pin", tok.SOPin)
	cmd.Env = append(os.Environ(), c.Env())
	if out, err := cmd.CombinedOutput(); err != nil {
		// The output names the label and slot only; the PINs are on the
		// command line, not in the output.
		return Token{}, fmt.Errorf("softhsmtest: softhsm2-util --init-token: %w: %s", err, out)
	}
	return tok, nil
}

var (
	mu      sync.Mutex
	current *Conf // set by Setup for the process
)

// Setup creates the process-wide SoftHSM configuration and sets
// SOFTHSM2_CONF. Call it from TestMain before any test loads the module, and
// call cleanup after m.Run. Calling it twice is an error.
func Setup() (cleanup func(), err error) {
	mu.Lock()
	defer mu.Unlock()
	if current != nil {
		return nil, errors.New("softhsmtest: Setup called twice")
	}
	dir, err := os.MkdirTemp("", "softhsmtest-")
	if err != nil {
		return nil, fmt.Errorf("softhsmtest: %w", err)
	}
	c, err := writeConf(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	prev, hadPrev := os.LookupEnv("SOFTHSM2_CONF")
	if err := os.Setenv("SOFTHSM2_CONF", c.Path); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("softhsmtest: %w", err)
	}
	current = &c
	return func() {
		mu.Lock()
		defer mu.Unlock()
		current = nil
		if hadPrev {
			_ = os.Setenv("SOFTHSM2_CONF", prev)
		} else {
			_ = os.Unsetenv("SOFTHSM2_CONF")
		}
		_ = os.RemoveAll(dir)
	}, nil
}

// Current is the configuration Setup made for this process.
func Current(t testing.TB) Conf {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if current == nil {
		t.Fatal("softhsmtest: call softhsmtest.Setup from TestMain first")
	}
	if got := os.Getenv("SOFTHSM2_CONF"); got != current.Path {
		t.Fatalf("softhsmtest: SOFTHSM2_CONF changed after Setup (%q, want %q)", got, current.Path)
	}
	return *current
}

// NewToken initialises a fresh token in the process-wide configuration made
// by Setup. See the package doc for when an already-loaded module sees it.
func NewToken(t testing.TB) Token {
	t.Helper()
	return Current(t).NewToken(t)
}

// Main runs Setup, the tests, and the cleanup; for TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(softhsmtest.Main(m)) }
func Main(m *testing.M) int {
	cleanup, err := Setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	return m.Run()
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails: crypto/rand crashes the program instead
	return hex.EncodeToString(b)
}
