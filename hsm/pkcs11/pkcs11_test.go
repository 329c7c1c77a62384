//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/hsm/hsmtest"
	hsmpkcs11 "github.com/vaultd/vaultd/hsm/pkcs11"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/internal/softhsmtest"
)

// One SoftHSM conf per test process. Tokens are created while no keyring is
// open (each test closes its keyrings in t.Cleanup), so a re-initialised
// module sees them; see internal/softhsmtest. No test here is parallel.
func TestMain(m *testing.M) { os.Exit(softhsmtest.Main(m)) }

const kekLabel = "vaultd-kek"

func config(tok softhsmtest.Token) hsmpkcs11.Config {
	return hsmpkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: secret.NewString(tok.PIN), KEKLabel: kekLabel}
}

// logBuf collects the keyring's log output so tests can check it for PINs.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// initToken makes a token with KEK version 1 and the audit signing key.
func initToken(t testing.TB) softhsmtest.Token {
	t.Helper()
	tok := softhsmtest.NewToken(t)
	v, created, err := hsmpkcs11.InitKEK(t.Context(), config(tok), nil)
	if err != nil || v != 1 || !created {
		t.Fatalf("InitKEK = %d, %v, %v; want 1, true, nil", v, created, err)
	}
	if created, err := hsmpkcs11.InitAuditKey(t.Context(), config(tok), nil); err != nil || !created {
		t.Fatalf("InitAuditKey = %v, %v; want true, nil", created, err)
	}
	return tok
}

func openKeyring(t testing.TB, cfg hsmpkcs11.Config) *hsmpkcs11.PKCS11 {
	t.Helper()
	k, err := hsmpkcs11.Open(t.Context(), cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

func TestPKCS11KeyringSuite(t *testing.T) {
	tok := initToken(t)
	hsmtest.RunKeyringSuite(t, func(t *testing.T) hsm.Keyring { return openKeyring(t, config(tok)) })
}

// A small pool still serves 100 goroutines (they queue for sessions).
func TestPKCS11SmallPool(t *testing.T) {
	tok := initToken(t)
	cfg := config(tok)
	cfg.MaxSessions = 2
	k := openKeyring(t, cfg)
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Go(func() {
			w, err := k.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"), []byte("a"))
			if err == nil {
				_, err = k.Unwrap(ctx, w, []byte("a"))
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// rawSession gives f a logged-in session of a second, raw handle on the
// module while k (which owns the login) is open. Like the backend, it never
// finalises the module.
func rawSession(t *testing.T, tok softhsmtest.Token, f func(mod *pkcs11.Ctx, s pkcs11.SessionHandle)) {
	t.Helper()
	path, err := filepath.EvalSymlinks(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	mod := pkcs11.New(path)
	if mod == nil {
		t.Fatal("pkcs11.New failed")
	}
	defer mod.Destroy()
	if err := mod.Initialize(); !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		t.Fatalf("Initialize = %v; want ALREADY_INITIALIZED (a keyring must be open)", err)
	}
	slots, err := mod.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, sl := range slots {
		ti, err := mod.GetTokenInfo(sl)
		if err != nil || ti.Label != tok.Label {
			continue
		}
		s, err := mod.OpenSession(sl, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = mod.CloseSession(s) }()
		f(mod, s)
		return
	}
	t.Fatalf("token %q not found", tok.Label)
}

func findAll(t *testing.T, mod *pkcs11.Ctx, s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) []pkcs11.ObjectHandle {
	t.Helper()
	if err := mod.FindObjectsInit(s, tmpl); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mod.FindObjectsFinal(s) }()
	hs, _, err := mod.FindObjects(s, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

func kekHandles(t *testing.T, mod *pkcs11.Ctx, s pkcs11.SessionHandle) []pkcs11.ObjectHandle {
	t.Helper()
	return findAll(t, mod, s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, kekLabel)})
}

func pkcs11Tool(t *testing.T, tok softhsmtest.Token, args ...string) string {
	t.Helper()
	tool, err := exec.LookPath("pkcs11-tool")
	if err != nil {
		t.Fatal("pkcs11-tool not found; scripts/test.sh installs it (opensc)")
	}
	base := []string{"--module", tok.Module, "--token-label", tok.Label, "--login", "--pin", tok.PIN}
	cmd := exec.Command(tool, append(base, args...)...)
	cmd.Env = append(os.Environ(), tok.Env())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool %v: %v\n%s", args, err, out)
	}
	return string(out)
}

var sentinels = map[string]error{
	"ErrModule": hsm.ErrModule, "ErrTokenNotFound": hsm.ErrTokenNotFound, "ErrWrongPIN": hsm.ErrWrongPIN,
	"ErrPINLocked": hsm.ErrPINLocked, "ErrKEKNotFound": hsm.ErrKEKNotFound, "ErrUnavailable": hsm.ErrUnavailable,
	"ErrUnwrap": hsm.ErrUnwrap, "ErrClosed": hsm.ErrClosed, "ErrKEKInvalid": hsm.ErrKEKInvalid,
}

// matching lists the sentinels err matches.
func matching(err error) []string {
	var out []string
	for name, s := range sentinels {
		if errors.Is(err, s) {
			out = append(out, name)
		}
	}
	return out
}

func TestOpenErrors(t *testing.T) {
	withKEK := initToken(t)
	noKEK := softhsmtest.NewToken(t)
	notLib := filepath.Join(t.TempDir(), "libnot.so")
	if err := os.WriteFile(notLib, []byte("not an ELF file"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongPIN := "wrong-" + withKEK.PIN[:6]

	cases := []struct {
		name string
		cfg  hsmpkcs11.Config
		want string
	}{
		{"wrong PIN", func() hsmpkcs11.Config { c := config(withKEK); c.PIN = secret.NewString(wrongPIN); return c }(), "ErrWrongPIN"},
		{"empty PIN", func() hsmpkcs11.Config { c := config(withKEK); c.PIN = secret.String{}; return c }(), "ErrWrongPIN"},
		{"missing token", func() hsmpkcs11.Config { c := config(withKEK); c.TokenLabel = "no-such-token"; return c }(), "ErrTokenNotFound"},
		{"missing KEK", config(noKEK), "ErrKEKNotFound"},
		{"other KEK label", func() hsmpkcs11.Config { c := config(withKEK); c.KEKLabel = "other-kek"; return c }(), "ErrKEKNotFound"},
		{"bad module path", func() hsmpkcs11.Config { c := config(withKEK); c.Module = "/nonexistent/libpkcs11.so"; return c }(), "ErrModule"},
		{"module not a library", func() hsmpkcs11.Config { c := config(withKEK); c.Module = notLib; return c }(), "ErrModule"},
		{"module is a directory", func() hsmpkcs11.Config { c := config(withKEK); c.Module = t.TempDir(); return c }(), "ErrModule"},
		{"no module", func() hsmpkcs11.Config { c := config(withKEK); c.Module = ""; return c }(), "ErrModule"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logger, logs := newLogger()
			k, err := hsmpkcs11.Open(t.Context(), tc.cfg, logger)
			if err == nil {
				_ = k.Close()
				t.Fatal("Open succeeded")
			}
			if got := matching(err); len(got) != 1 || got[0] != tc.want {
				t.Fatalf("error %q matches %v, want exactly [%s]", err, got, tc.want)
			}
			for _, pin := range []string{withKEK.PIN, noKEK.PIN, wrongPIN} {
				if strings.Contains(err.Error(), pin) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), pin) {
					t.Fatalf("error reveals a PIN: %q", err)
				}
				if strings.Contains(logs.String(), pin) {
					t.Fatal("log reveals a PIN")
				}
			}
			if !strings.HasPrefix(err.Error(), "hsm: ") {
				t.Errorf("error %q lacks the hsm: prefix", err)
			}
			t.Logf("%s: %v", tc.name, err)
			// InitKEK reports the same (except a missing KEK, which it creates).
			if tc.want != "ErrKEKNotFound" {
				_, _, err := hsmpkcs11.InitKEK(t.Context(), tc.cfg, logger)
				if got := matching(err); len(got) != 1 || got[0] != tc.want {
					t.Fatalf("InitKEK error %q matches %v, want [%s]", err, got, tc.want)
				}
			}
		})
	}

	// After all that, the right config still opens (nothing leaked or got
	// stuck in the module's state).
	k := openKeyring(t, config(withKEK))
	if err := k.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestOpenCancelled(t *testing.T) {
	tok := initToken(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := hsmpkcs11.Open(ctx, config(tok), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, _, err := hsmpkcs11.InitKEK(ctx, config(tok), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("InitKEK: err = %v, want context.Canceled", err)
	}
}

// Close while 100 goroutines work: every call either succeeds or fails with
// ErrClosed; nothing crashes or hangs.
func TestCloseUnderLoad(t *testing.T) {
	tok := initToken(t)
	k := openKeyring(t, config(tok))
	ctx := t.Context()
	w, err := k.Wrap(ctx, []byte("0123456789abcdef"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	start := make(chan struct{})
	for i := range 100 {
		wg.Go(func() {
			<-start
			var err error
			if i%2 == 0 {
				_, err = k.Wrap(ctx, []byte("0123456789abcdef"), nil)
			} else {
				_, err = k.Unwrap(ctx, w, nil)
			}
			if err != nil && !errors.Is(err, hsm.ErrClosed) {
				errs <- err
			}
		})
	}
	close(start)
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("call during Close: %v", err)
	}
	if _, err := k.Wrap(ctx, []byte("k"), nil); !errors.Is(err, hsm.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestLogsCarryNoPIN(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	logger, logs := newLogger()
	if _, _, err := hsmpkcs11.InitKEK(t.Context(), config(tok), logger); err != nil {
		t.Fatal(err)
	}
	k, err := hsmpkcs11.Open(t.Context(), config(tok), logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.RotateKEK(t.Context()); err != nil {
		t.Fatal(err)
	}
	_ = k.Close()
	out := logs.String()
	if !strings.Contains(out, tok.Label) || !strings.Contains(out, "KEK created") {
		t.Fatalf("expected InitKEK/Open/Rotate logs, got:\n%s", out)
	}
	if strings.Contains(out, tok.PIN) {
		t.Fatal("logs reveal the PIN")
	}
}

func benchKeyring(b *testing.B) *hsmpkcs11.PKCS11 {
	tok := softhsmtest.NewToken(b)
	if _, _, err := hsmpkcs11.InitKEK(context.Background(), config(tok), nil); err != nil {
		b.Fatal(err)
	}
	return openKeyring(b, config(tok))
}

func BenchmarkWrap(b *testing.B) {
	k := benchKeyring(b)
	ctx := context.Background()
	dek := make([]byte, 32)
	aad := binary.BigEndian.AppendUint32([]byte("tenant\x00"), 1)
	for b.Loop() {
		if _, err := k.Wrap(ctx, dek, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnwrap(b *testing.B) {
	k := benchKeyring(b)
	ctx := context.Background()
	aad := []byte("tenant")
	w, err := k.Wrap(ctx, make([]byte, 32), aad)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := k.Unwrap(ctx, w, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWrapParallel(b *testing.B) {
	k := benchKeyring(b)
	dek := make([]byte, 32)
	b.ResetTimer() // token set-up is not the benchmark
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := k.Wrap(context.Background(), dek, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
