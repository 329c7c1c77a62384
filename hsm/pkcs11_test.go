package hsm_test

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

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/hsm/hsmtest"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/internal/softhsmtest"
)

// One SoftHSM conf per test process. Tokens are created while no keyring is
// open (each test closes its keyrings in t.Cleanup), so a re-initialised
// module sees them; see internal/softhsmtest. No test here is parallel.
func TestMain(m *testing.M) { os.Exit(softhsmtest.Main(m)) }

const kekLabel = "vaultd-kek"

func config(tok softhsmtest.Token) hsm.Config {
	return hsm.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: secret.NewString(tok.PIN), KEKLabel: kekLabel}
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

// initToken makes a token with KEK version 1.
func initToken(t testing.TB) softhsmtest.Token {
	t.Helper()
	tok := softhsmtest.NewToken(t)
	v, created, err := hsm.InitKEK(context.Background(), config(tok), nil)
	if err != nil || v != 1 || !created {
		t.Fatalf("InitKEK = %d, %v, %v; want 1, true, nil", v, created, err)
	}
	return tok
}

func openKeyring(t testing.TB, cfg hsm.Config) *hsm.PKCS11 {
	t.Helper()
	k, err := hsm.Open(context.Background(), cfg, nil)
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
	ctx := context.Background()
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

func TestInitKEKAttributes(t *testing.T) {
	tok := initToken(t)
	k := openKeyring(t, config(tok))
	if k.CurrentVersion() != 1 {
		t.Fatalf("CurrentVersion = %d, want 1", k.CurrentVersion())
	}

	// 1. Through the backend's own reader.
	infos, err := k.KEKInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := hsm.KEKInfo{Version: 1, Label: kekLabel, KeyType: "AES", Bytes: 32, Token: true, Private: true,
		Sensitive: true, Extractable: false, AlwaysSensitive: true, NeverExtractable: true,
		Encrypt: true, Decrypt: true, Modifiable: false}
	if len(infos) != 1 || infos[0] != want {
		t.Fatalf("KEKInfo = %+v, want [%+v]", infos, want)
	}

	// 2. Independently, through crypto11's FindKeysWithAttributes and
	// GetAttributes (same canonical module path, so it shares the module).
	path, _ := filepath.EvalSymlinks(tok.Module)
	c11, err := crypto11.Configure(&crypto11.Config{Path: path, TokenLabel: tok.Label, Pin: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	q := crypto11.NewAttributeSet()
	_ = q.Set(crypto11.CkaLabel, kekLabel)
	keys, err := c11.FindKeysWithAttributes(q)
	if err != nil || len(keys) != 1 {
		t.Fatalf("crypto11 found %d keys, err %v", len(keys), err)
	}
	attrs, err := c11.GetAttributes(keys[0], []crypto11.AttributeType{
		crypto11.CkaSensitive, crypto11.CkaExtractable, crypto11.CkaToken, crypto11.CkaId, crypto11.CkaWrap, crypto11.CkaUnwrap})
	if err != nil {
		t.Fatal(err)
	}
	for typ, wantV := range map[crypto11.AttributeType][]byte{
		crypto11.CkaSensitive: {1}, crypto11.CkaExtractable: {0}, crypto11.CkaToken: {1},
		crypto11.CkaId: {0, 0, 0, 1}, crypto11.CkaWrap: {0}, crypto11.CkaUnwrap: {0},
	} {
		if a := attrs[typ]; a == nil || !bytes.Equal(a.Value, wantV) {
			t.Errorf("crypto11 attribute 0x%x = %v, want %v", typ, a, wantV)
		}
	}
	if err := c11.Close(); err != nil {
		t.Fatal(err)
	}

	// 3. The key cannot leave the HSM: no C_WrapKey under another key, no
	// CKA_VALUE, no flipping CKA_EXTRACTABLE.
	rawSession(t, tok, func(mod *pkcs11.Ctx, s pkcs11.SessionHandle) {
		hs := kekHandles(t, mod, s)
		if len(hs) != 1 {
			t.Fatalf("found %d KEK objects, want 1", len(hs))
		}
		kek := hs[0]
		wrapper, err := mod.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		})
		if err != nil {
			t.Fatalf("generate wrapping key: %v", err)
		}
		for _, m := range []uint{pkcs11.CKM_AES_KEY_WRAP_PAD, pkcs11.CKM_AES_KEY_WRAP, pkcs11.CKM_AES_ECB} {
			out, err := mod.WrapKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(m, nil)}, wrapper, kek)
			if err == nil || len(out) != 0 {
				t.Errorf("C_WrapKey(mech 0x%x) of the KEK succeeded (%d bytes)", m, len(out))
			}
		}
		if _, err := mod.WrapKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, wrapper, kek); !errors.Is(err, pkcs11.Error(pkcs11.CKR_KEY_UNEXTRACTABLE)) {
			t.Errorf("C_WrapKey: err = %v, want CKR_KEY_UNEXTRACTABLE", err)
		}
		v, err := mod.GetAttributeValue(s, kek, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
			t.Errorf("reading CKA_VALUE: %d attrs, err = %v; want CKR_ATTRIBUTE_SENSITIVE", len(v), err)
		}
		for _, a := range []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
		} {
			if err := mod.SetAttributeValue(s, kek, []*pkcs11.Attribute{a}); err == nil {
				t.Errorf("C_SetAttributeValue(0x%x) on the KEK succeeded", a.Type)
			}
		}
	})

	// 4. Independently, in another process: pkcs11-tool.
	out := pkcs11Tool(t, tok, "--list-objects", "--type", "secrkey")
	t.Logf("pkcs11-tool:\n%s", out)
	if !strings.Contains(out, "label:      "+kekLabel) || !strings.Contains(out, "00000001") {
		t.Fatalf("pkcs11-tool does not list the KEK:\n%s", out)
	}
	access, usage := "", ""
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "Access:"); ok {
			access = v
		}
		if v, ok := strings.CutPrefix(line, "Usage:"); ok {
			usage = strings.TrimSpace(v)
		}
	}
	if usage != "encrypt, decrypt" {
		t.Errorf("pkcs11-tool Usage = %q, want only encrypt, decrypt (no wrap/unwrap/sign)", usage)
	}
	for _, w := range []string{"sensitive", "always sensitive", "never extractable"} {
		if !strings.Contains(access, w) {
			t.Errorf("pkcs11-tool Access line %q lacks %q", access, w)
		}
	}
	// "extractable" appears only as part of "never extractable".
	if strings.Count(access, "extractable") != strings.Count(access, "never extractable") {
		t.Errorf("pkcs11-tool reports the KEK extractable: %q", access)
	}
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

func TestInitKEKIdempotent(t *testing.T) {
	tok := initToken(t)
	count := func() int {
		return strings.Count(pkcs11Tool(t, tok, "--list-objects"), "Object;")
	}
	before := count()
	for range 2 {
		v, created, err := hsm.InitKEK(context.Background(), config(tok), nil)
		if err != nil || v != 1 || created {
			t.Fatalf("InitKEK again = %d, %v, %v; want 1, false, nil", v, created, err)
		}
	}
	if after := count(); after != before || before != 1 {
		t.Fatalf("objects on token: %d before, %d after; want 1 and 1", before, after)
	}
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
		cfg  hsm.Config
		want string
	}{
		{"wrong PIN", func() hsm.Config { c := config(withKEK); c.PIN = secret.NewString(wrongPIN); return c }(), "ErrWrongPIN"},
		{"empty PIN", func() hsm.Config { c := config(withKEK); c.PIN = secret.String{}; return c }(), "ErrWrongPIN"},
		{"missing token", func() hsm.Config { c := config(withKEK); c.TokenLabel = "no-such-token"; return c }(), "ErrTokenNotFound"},
		{"missing KEK", config(noKEK), "ErrKEKNotFound"},
		{"other KEK label", func() hsm.Config { c := config(withKEK); c.KEKLabel = "other-kek"; return c }(), "ErrKEKNotFound"},
		{"bad module path", func() hsm.Config { c := config(withKEK); c.Module = "/nonexistent/libpkcs11.so"; return c }(), "ErrModule"},
		{"module not a library", func() hsm.Config { c := config(withKEK); c.Module = notLib; return c }(), "ErrModule"},
		{"module is a directory", func() hsm.Config { c := config(withKEK); c.Module = t.TempDir(); return c }(), "ErrModule"},
		{"no module", func() hsm.Config { c := config(withKEK); c.Module = ""; return c }(), "ErrModule"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logger, logs := newLogger()
			k, err := hsm.Open(context.Background(), tc.cfg, logger)
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
				_, _, err := hsm.InitKEK(context.Background(), tc.cfg, logger)
				if got := matching(err); len(got) != 1 || got[0] != tc.want {
					t.Fatalf("InitKEK error %q matches %v, want [%s]", err, got, tc.want)
				}
			}
		})
	}

	// After all that, the right config still opens (nothing leaked or got
	// stuck in the module's state).
	k := openKeyring(t, config(withKEK))
	if err := k.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestOpenCancelled(t *testing.T) {
	tok := initToken(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := hsm.Open(ctx, config(tok), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, _, err := hsm.InitKEK(ctx, config(tok), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("InitKEK: err = %v, want context.Canceled", err)
	}
}

// plantKey creates an AES token object labelled kekLabel with the given
// overrides, through crypto11 (as an operator's tool might).
func plantKey(t *testing.T, tok softhsmtest.Token, id []byte, overrides map[crypto11.AttributeType]any) {
	t.Helper()
	path, _ := filepath.EvalSymlinks(tok.Module)
	c11, err := crypto11.Configure(&crypto11.Config{Path: path, TokenLabel: tok.Label, Pin: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c11.Close() }()
	tmpl := crypto11.NewAttributeSet()
	for typ, v := range map[crypto11.AttributeType]any{
		crypto11.CkaLabel: kekLabel, crypto11.CkaId: id, crypto11.CkaPrivate: true,
		crypto11.CkaSensitive: true, crypto11.CkaExtractable: false,
	} {
		_ = tmpl.Set(typ, v)
	}
	for typ, v := range overrides {
		_ = tmpl.Set(typ, v)
	}
	if _, err := c11.GenerateSecretKeyWithAttributes(tmpl, 256, crypto11.CipherAES); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesBadKEK(t *testing.T) {
	v1 := []byte{0, 0, 0, 1}
	cases := []struct {
		name  string
		plant func(t *testing.T, tok softhsmtest.Token)
	}{
		{"extractable", func(t *testing.T, tok softhsmtest.Token) {
			plantKey(t, tok, v1, map[crypto11.AttributeType]any{crypto11.CkaExtractable: true})
		}},
		{"not sensitive", func(t *testing.T, tok softhsmtest.Token) {
			plantKey(t, tok, v1, map[crypto11.AttributeType]any{crypto11.CkaSensitive: false})
		}},
		{"not private", func(t *testing.T, tok softhsmtest.Token) {
			plantKey(t, tok, v1, map[crypto11.AttributeType]any{crypto11.CkaPrivate: false})
		}},
		{"no decrypt", func(t *testing.T, tok softhsmtest.Token) {
			plantKey(t, tok, v1, map[crypto11.AttributeType]any{crypto11.CkaDecrypt: false})
		}},
		{"bad id", func(t *testing.T, tok softhsmtest.Token) { plantKey(t, tok, []byte{1}, nil) }},
		{"version 0", func(t *testing.T, tok softhsmtest.Token) { plantKey(t, tok, []byte{0, 0, 0, 0}, nil) }},
		{"duplicate version", func(t *testing.T, tok softhsmtest.Token) {
			plantKey(t, tok, v1, nil)
			plantKey(t, tok, v1, nil)
		}},
		{"good v1 plus extractable v2", func(t *testing.T, tok softhsmtest.Token) {
			plantKey(t, tok, v1, nil)
			plantKey(t, tok, []byte{0, 0, 0, 2}, map[crypto11.AttributeType]any{crypto11.CkaExtractable: true})
		}},
	}
	// Every token first: the module must be closed when tokens are made.
	toks := make([]softhsmtest.Token, len(cases))
	for i := range cases {
		toks[i] = softhsmtest.NewToken(t)
	}
	control := softhsmtest.NewToken(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := toks[i]
			tc.plant(t, tok)
			k, err := hsm.Open(context.Background(), config(tok), nil)
			if err == nil {
				_ = k.Close()
				t.Fatal("Open accepted the key set")
			}
			if got := matching(err); len(got) != 1 || got[0] != "ErrKEKInvalid" {
				t.Fatalf("Open: %q matches %v, want [ErrKEKInvalid]", err, got)
			}
			t.Logf("%v", err)
			if _, created, err := hsm.InitKEK(context.Background(), config(tok), nil); !errors.Is(err, hsm.ErrKEKInvalid) || created {
				t.Fatalf("InitKEK: created=%v err=%v, want ErrKEKInvalid", created, err)
			}
		})
	}

	// Control: the same helper without overrides plants an acceptable KEK,
	// so the refusals above are due to the overrides.
	t.Run("control", func(t *testing.T) {
		plantKey(t, control, v1, nil)
		k := openKeyring(t, config(control))
		if k.CurrentVersion() != 1 {
			t.Fatalf("CurrentVersion = %d", k.CurrentVersion())
		}
		if _, err := k.Wrap(context.Background(), []byte("k"), nil); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRotateKEK(t *testing.T) {
	tok := initToken(t)
	ctx := context.Background()
	aad := []byte("tenant=acme")
	dek := []byte("0123456789abcdef0123456789abcdef")

	k := openKeyring(t, config(tok))
	old, err := k.Wrap(ctx, dek, aad)
	if err != nil || old.KEKVersion != 1 {
		t.Fatalf("Wrap: version %d, err %v", old.KEKVersion, err)
	}
	v, err := k.RotateKEK(ctx)
	if err != nil || v != 2 || k.CurrentVersion() != 2 {
		t.Fatalf("RotateKEK = %d, %v; current %d; want 2", v, err, k.CurrentVersion())
	}
	got, err := k.Unwrap(ctx, old, aad)
	if err != nil || !bytes.Equal(got.Reveal(), dek) {
		t.Fatalf("Unwrap of a version-1 blob after rotation: %v", err)
	}
	nw, err := k.Wrap(ctx, dek, aad)
	if err != nil || nw.KEKVersion != 2 {
		t.Fatalf("Wrap after rotation: version %d, err %v", nw.KEKVersion, err)
	}
	// A version-2 blob relabelled as version 1 fails: the versions are
	// different keys.
	relabelled := nw
	relabelled.KEKVersion = 1
	if _, err := k.Unwrap(ctx, relabelled, aad); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("relabelled blob: err = %v, want ErrUnwrap", err)
	}
	infos, err := k.KEKInfo(ctx)
	if err != nil || len(infos) != 2 || infos[0].Version != 1 || infos[1].Version != 2 || infos[1].Extractable || !infos[1].Sensitive {
		t.Fatalf("KEKInfo after rotation = %+v, %v", infos, err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}

	// A fresh Open picks the highest version and still unwraps both.
	k2 := openKeyring(t, config(tok))
	if k2.CurrentVersion() != 2 {
		t.Fatalf("reopened CurrentVersion = %d, want 2", k2.CurrentVersion())
	}
	for _, w := range []hsm.WrappedKey{old, nw} {
		if got, err := k2.Unwrap(ctx, w, aad); err != nil || !bytes.Equal(got.Reveal(), dek) {
			t.Fatalf("reopened Unwrap(version %d): %v", w.KEKVersion, err)
		}
	}
	// InitKEK still changes nothing.
	if v, created, err := hsm.InitKEK(ctx, config(tok), nil); err != nil || v != 2 || created {
		t.Fatalf("InitKEK after rotation = %d, %v, %v; want 2, false, nil", v, created, err)
	}
}

// Rotation by one keyring becomes visible to another through Reload.
func TestReload(t *testing.T) {
	tok := initToken(t)
	ctx := context.Background()
	a := openKeyring(t, config(tok))
	b := openKeyring(t, config(tok))
	if _, err := a.RotateKEK(ctx); err != nil {
		t.Fatal(err)
	}
	if b.CurrentVersion() != 1 {
		t.Fatalf("b saw the rotation without Reload: %d", b.CurrentVersion())
	}
	if err := b.Reload(ctx); err != nil || b.CurrentVersion() != 2 {
		t.Fatalf("Reload: %v, current %d", err, b.CurrentVersion())
	}
	w, err := a.Wrap(ctx, []byte("k"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Unwrap(ctx, w, nil); err != nil {
		t.Fatalf("b unwraps a's version-2 blob: %v", err)
	}
}

// Close while 100 goroutines work: every call either succeeds or fails with
// ErrClosed; nothing crashes or hangs.
func TestCloseUnderLoad(t *testing.T) {
	tok := initToken(t)
	k := openKeyring(t, config(tok))
	ctx := context.Background()
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
	if _, _, err := hsm.InitKEK(context.Background(), config(tok), logger); err != nil {
		t.Fatal(err)
	}
	k, err := hsm.Open(context.Background(), config(tok), logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.RotateKEK(context.Background()); err != nil {
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

func benchKeyring(b *testing.B) *hsm.PKCS11 {
	tok := softhsmtest.NewToken(b)
	if _, _, err := hsm.InitKEK(context.Background(), config(tok), nil); err != nil {
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

// Losing the HSM sessions (token reset, network HSM blip) makes calls fail
// with ErrUnavailable, never ErrUnwrap: a good blob must not look tampered.
func TestSessionLossIsUnavailable(t *testing.T) {
	tok := initToken(t)
	k := openKeyring(t, config(tok))
	ctx := context.Background()
	w, err := k.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rawSession(t, tok, func(mod *pkcs11.Ctx, s pkcs11.SessionHandle) {
		si, err := mod.GetSessionInfo(s)
		if err != nil {
			t.Fatal(err)
		}
		// Closes every session of this application, crypto11's logged-in
		// one included, which also logs the application out.
		if err := mod.CloseAllSessions(si.SlotID); err != nil {
			t.Fatal(err)
		}
	})
	for i := range 3 { // first on stale pooled sessions, then on fresh ones
		if _, err := k.Unwrap(ctx, w, nil); !errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, hsm.ErrUnwrap) {
			t.Fatalf("Unwrap #%d after session loss: %v, want ErrUnavailable only", i, err)
		}
		if _, err := k.Wrap(ctx, []byte("k"), nil); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Wrap #%d after session loss: %v, want ErrUnavailable", i, err)
		}
		if err := k.Ping(ctx); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Ping #%d after session loss: %v, want ErrUnavailable", i, err)
		}
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
}

// An HSM restart or failover invalidates object handles while the KEK
// objects still exist under their label. Ping reports the stale handle as
// unavailable, and once a KEK with the label is there again it finds it by
// label (policy checks included) instead of needing a restart.
func TestPingRefindsStaleKEKHandle(t *testing.T) {
	tok := initToken(t)
	ctx := context.Background()
	logger, logs := newLogger()
	k, err := hsm.Open(ctx, config(tok), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	old, err := k.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Ping(ctx); err != nil {
		t.Fatalf("healthy Ping: %v", err)
	}
	// Take the KEK object away behind the keyring's back.
	rawSession(t, tok, func(mod *pkcs11.Ctx, s pkcs11.SessionHandle) {
		if err := mod.FindObjectsInit(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, kekLabel)}); err != nil {
			t.Fatal(err)
		}
		hs, _, err := mod.FindObjects(s, 10)
		_ = mod.FindObjectsFinal(s)
		if err != nil || len(hs) != 1 {
			t.Fatalf("find KEK: %v, %d objects", err, len(hs))
		}
		if err := mod.DestroyObject(s, hs[0]); err != nil {
			t.Fatal(err)
		}
	})
	if err := k.Ping(ctx); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Ping without the KEK object: %v, want ErrUnavailable", err)
	}
	if _, err := k.Wrap(ctx, []byte("k"), nil); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Wrap without the KEK object: %v, want ErrUnavailable", err)
	}
	// A KEK with the label is back (here a new one: SoftHSM cannot restore
	// the old non-extractable key, which is the point of it).
	if _, created, err := hsm.InitKEK(ctx, config(tok), nil); err != nil || !created {
		t.Fatalf("InitKEK: created %v, %v", created, err)
	}
	if err := k.Ping(ctx); err != nil {
		t.Fatalf("Ping after the KEK came back: %v", err)
	}
	if !strings.Contains(logs.String(), "KEK handle was stale") {
		t.Fatalf("no log line for the re-found KEK:\n%s", logs)
	}
	w, err := k.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"), nil)
	if err != nil {
		t.Fatalf("Wrap after recovery: %v", err)
	}
	if _, err := k.Unwrap(ctx, w, nil); err != nil {
		t.Fatalf("Unwrap after recovery: %v", err)
	}
	// A blob of the destroyed key stays unreadable: authentication fails.
	if _, err := k.Unwrap(ctx, old, nil); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("Unwrap of the destroyed key's blob: %v, want ErrUnwrap", err)
	}
}
