package hsm

// The PKCS#11 backend.
//
// Design
//
// crypto11 does what it does well and nothing else: Configure (load the
// module, find the token by label, log in, keep a persistent logged-in
// session) and GenerateSecretKeyWithAttributes (KEK creation). Wrap and
// Unwrap do NOT go through crypto11's cipher.AEAD: its Seal cannot return an
// error and panics on an HSM failure, which would take down the daemon on a
// transient device error.
//
// Instead Wrap/Unwrap are C_EncryptInit/C_Encrypt and C_DecryptInit/
// C_Decrypt with CKM_AES_GCM (12-byte random IV from crypto/rand, 128-bit
// tag, caller AAD) through raw github.com/miekg/pkcs11, in read-only sessions
// from a small pool of our own over the same module. Our handle on the module
// is a second dlopen of the same library; its C_Initialize answers
// CKR_CRYPTOKI_ALREADY_INITIALIZED because crypto11 initialised it, and it
// never calls C_Finalize: crypto11 owns the module's lifetime (refcounted per
// path, finalised when its last Context closes). Login state is per
// application in PKCS#11, so our sessions are logged in through crypto11's.
//
// Why AES-GCM encryption and not C_WrapKey: CKM_AES_KEY_WRAP(_PAD) through
// C_WrapKey needs the DEK to exist as an HSM object first (one C_CreateObject
// plus C_DestroyObject per DEK, and a session object holding key material),
// it binds no AAD, and support for the padded variant varies between HSMs.
// CKM_AES_GCM via C_Encrypt is supported by SoftHSMv2 2.6.1 and by the
// production HSMs we target, authenticates the tenant and DEK version through
// the AAD, and reports every failure as an error. (SoftHSMv2 reports a tag
// mismatch as CKR_GENERAL_ERROR; Unwrap tells it from a sick device by
// checking that the session is still logged in.)
//
// Object handles are found with raw C_FindObjects because crypto11 does not
// expose them; token-object handles are valid in every session of the
// application, so they are looked up once (Open, RotateKEK, Reload).
//
// Errors are sentinel-typed (errors.Is) with a short context; no message
// carries the PIN. If the HSM drops the sessions (and with them the login),
// every call fails with ErrUnavailable until the keyring is reopened: there
// is deliberately no automatic re-login, which could lock a changed PIN by
// retrying it. Known limitation: miekg/pkcs11 copies a decrypted DEK
// through a C buffer that it frees without zeroing.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/internal/secret"
)

const (
	gcmNonceSize = 12
	gcmTagBits   = 128
	gcmTagSize   = gcmTagBits / 8
	kekBytes     = 32 // AES-256

	// DefaultMaxSessions bounds the wrap/unwrap session pool when
	// Config.MaxSessions is 0. Wraps are short; a handful of sessions keeps
	// the HSM busy without exhausting a shared partition's session limit.
	DefaultMaxSessions = 16

	// maxKEKObjects bounds the KEK search: a label matching more objects than
	// this is a misconfiguration, not a key set.
	maxKEKObjects = 1024

	// ckrAEADDecryptFailed is PKCS#11 v3.0's tag-mismatch code (absent from
	// miekg/pkcs11's v2.40 constants).
	ckrAEADDecryptFailed = pkcs11.Error(0x00000035)
)

// policyViolation says what is wrong with k as a KEK, or "" if nothing.
func (k KEKInfo) policyViolation() string {
	var bad []string
	if k.KeyType != "AES" {
		bad = append(bad, "key type "+k.KeyType+" (want AES)")
	}
	if k.Bytes != kekBytes {
		bad = append(bad, fmt.Sprintf("%d-bit key (want 256)", k.Bytes*8))
	}
	if !k.Token {
		bad = append(bad, "not a token object")
	}
	if !k.Private {
		bad = append(bad, "CKA_PRIVATE=false")
	}
	if !k.Sensitive {
		bad = append(bad, "CKA_SENSITIVE=false")
	}
	if k.Extractable {
		bad = append(bad, "CKA_EXTRACTABLE=true")
	}
	if !k.Encrypt || !k.Decrypt {
		bad = append(bad, "not usable for encrypt and decrypt")
	}
	return strings.Join(bad, ", ")
}

// PKCS11 is the Keyring backed by a PKCS#11 token. Create it with Open.
type PKCS11 struct {
	logger     *slog.Logger
	tokenLabel string
	kekLabel   string

	c11  *crypto11.Context
	mod  *pkcs11.Ctx
	slot uint
	pool *sessionPool

	// life: operations hold it shared for their whole duration; Close takes
	// it exclusively, so the module is never released under a running call.
	life   sync.RWMutex
	closed bool

	rotMu sync.Mutex // serialises RotateKEK/Reload

	mu      sync.RWMutex // guards keks and current
	keks    map[uint32]kekObject
	current uint32
}

type kekObject struct {
	handle pkcs11.ObjectHandle
	info   KEKInfo
}

var (
	_ Keyring      = (*PKCS11)(nil)
	_ KEKRotator   = (*PKCS11)(nil)
	_ Reloader     = (*PKCS11)(nil)
	_ KEKInspector = (*PKCS11)(nil)
)

// Open loads the module, logs in to the token and finds the KEK versions
// labelled cfg.KEKLabel; the highest is current. Without a KEK it fails with
// ErrKEKNotFound (vaultd never creates one; see InitKEK). A KEK object that
// breaks the policy (extractable, not sensitive, ...) fails with ErrKEKInvalid.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*PKCS11, error) {
	p, err := open(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	keks, err := p.scan(ctx)
	if err == nil && len(keks) == 0 {
		err = p.errorf(ErrKEKNotFound, nil, "token %q: no KEK labelled %q (run 'vaultctl init')", p.tokenLabel, p.kekLabel)
	}
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	p.install(keks)
	p.logger.Info("hsm: keyring open", "token", p.tokenLabel, "kek_label", p.kekLabel,
		"kek_version", p.CurrentVersion(), "kek_versions", len(keks))
	return p, nil
}

// InitKEK creates KEK version 1 labelled cfg.KEKLabel unless a KEK with that
// label already exists, in which case it changes nothing and reports the
// current version with created=false. Existing KEK objects that break the
// policy fail with ErrKEKInvalid. Two InitKEK runs racing on one token can
// both create version 1; Open then refuses the duplicate (ErrKEKInvalid), so
// the race fails closed. Run it from one place ('vaultctl init').
func InitKEK(ctx context.Context, cfg Config, logger *slog.Logger) (version uint32, created bool, err error) {
	p, err := open(ctx, cfg, logger)
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = p.Close() }()
	keks, err := p.scan(ctx)
	if err != nil {
		return 0, false, err
	}
	if len(keks) > 0 {
		return maxVersion(keks), false, nil
	}
	if err := p.generate(ctx, 1); err != nil {
		return 0, false, err
	}
	keks, err = p.scan(ctx)
	if err != nil {
		return 0, false, err
	}
	if _, ok := keks[1]; !ok {
		return 0, false, p.errorf(ErrUnavailable, nil, "token %q: generated KEK version 1 not found", p.tokenLabel)
	}
	p.logger.Info("hsm: KEK created", "token", p.tokenLabel, "kek_label", p.kekLabel, "kek_version", 1)
	return 1, true, nil
}

// open loads the module and logs in; it does not look at KEKs.
func open(ctx context.Context, cfg Config, logger *slog.Logger) (*PKCS11, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &PKCS11{logger: logger, tokenLabel: cfg.TokenLabel, kekLabel: cfg.KEKLabel}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hsm: open: %w", err)
	}
	switch {
	case cfg.Module == "":
		return nil, p.errorf(ErrModule, nil, "no PKCS#11 module configured")
	case cfg.TokenLabel == "":
		return nil, p.errorf(ErrTokenNotFound, nil, "no token label configured")
	case cfg.KEKLabel == "":
		return nil, p.errorf(ErrKEKNotFound, nil, "no KEK label configured")
	case cfg.PIN.IsZero():
		// Some modules answer CKR_ARGUMENTS_BAD to an empty PIN; say what it is.
		return nil, p.errorf(ErrWrongPIN, nil, "token %q: empty PIN", cfg.TokenLabel)
	}
	// One canonical path per library: crypto11 refcounts modules by path
	// string, and two paths to one library would initialise it twice.
	module, err := filepath.EvalSymlinks(cfg.Module)
	if err == nil {
		module, err = filepath.Abs(module)
	}
	if err == nil {
		var fi os.FileInfo
		if fi, err = os.Stat(module); err == nil && !fi.Mode().IsRegular() {
			err = errors.New("not a regular file")
		}
	}
	if err != nil {
		return nil, p.errorf(ErrModule, err, "module %q", cfg.Module)
	}

	maxSessions := cfg.MaxSessions
	if maxSessions <= 0 {
		maxSessions = DefaultMaxSessions
	}
	c11cfg := &crypto11.Config{
		Path:       module,
		TokenLabel: cfg.TokenLabel,
		Pin:        cfg.PIN.Reveal(),
		// crypto11's own pool only serves KEK generation; one session plus
		// its persistent login session is plenty.
		MaxSessions:     2,
		PoolWaitTimeout: 30 * time.Second,
	}
	c11, err := crypto11.Configure(c11cfg)
	c11cfg.Pin = "" // crypto11 keeps the *Config; it needs the PIN only to log in
	if err != nil {
		return nil, p.configureError(cfg.Module, err)
	}
	p.c11 = c11

	fail := func(err error) (*PKCS11, error) {
		if p.mod != nil {
			p.mod.Destroy()
		}
		_ = c11.Close()
		return nil, err
	}
	// Our own handle on the module crypto11 just initialised.
	mod := pkcs11.New(module)
	if mod == nil {
		return fail(p.errorf(ErrModule, nil, "module %q: cannot load", cfg.Module))
	}
	p.mod = mod
	switch err := mod.Initialize(); {
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)):
	case err == nil:
		// A separate instance of the library: it would not share crypto11's
		// login. Undo our initialisation, which is ours alone.
		_ = mod.Finalize()
		return fail(p.errorf(ErrModule, nil, "module %q: not shared with the logged-in instance", cfg.Module))
	default:
		return fail(p.errorf(ErrModule, err, "module %q", cfg.Module))
	}
	slot, err := p.findSlot()
	if err != nil {
		return fail(err)
	}
	p.slot = slot
	p.pool = newSessionPool(mod, slot, maxSessions)
	return p, nil
}

// findSlot finds the token's slot the way crypto11 does (first slot whose
// token label matches), so both address the same token.
func (p *PKCS11) findSlot() (uint, error) {
	slots, err := p.mod.GetSlotList(true)
	if err != nil {
		return 0, p.p11Error("list slots", err)
	}
	for _, s := range slots {
		ti, err := p.mod.GetTokenInfo(s)
		if err != nil {
			return 0, p.p11Error("token info", err)
		}
		if ti.Label == p.tokenLabel {
			return s, nil
		}
	}
	return 0, p.errorf(ErrTokenNotFound, nil, "token %q: not present", p.tokenLabel)
}

// configureError maps a crypto11.Configure failure to a sentinel. crypto11
// v1.5.0 does not export its error values; its messages are matched here and
// pinned by the tests in this package.
func (p *PKCS11) configureError(module string, err error) error {
	msg := err.Error()
	var code pkcs11.Error
	switch {
	case strings.Contains(msg, "failed to create module context"):
		return p.errorf(ErrModule, err, "module %q: cannot load or initialise", module)
	case strings.Contains(msg, "could not find PKCS#11 token"):
		return p.errorf(ErrTokenNotFound, nil, "token %q: not present", p.tokenLabel)
	case errors.As(err, &code):
		switch code {
		case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
			return p.errorf(ErrWrongPIN, code, "token %q: wrong PIN", p.tokenLabel)
		case pkcs11.CKR_PIN_LOCKED:
			return p.errorf(ErrPINLocked, code, "token %q: PIN locked", p.tokenLabel)
		case pkcs11.CKR_PIN_EXPIRED:
			return p.errorf(ErrPINLocked, code, "token %q: PIN expired", p.tokenLabel)
		case pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_SLOT_ID_INVALID:
			return p.errorf(ErrTokenNotFound, code, "token %q: not present", p.tokenLabel)
		}
		return p.errorf(ErrUnavailable, code, "token %q: login", p.tokenLabel)
	}
	return p.errorf(ErrUnavailable, err, "token %q: open", p.tokenLabel)
}

func (p *PKCS11) errorf(kind, cause error, format string, args ...any) error {
	return &Error{Msg: "hsm: " + fmt.Sprintf(format, args...), Kind: kind, Cause: cause}
}

// p11Error maps a failed PKCS#11 call outside login to ErrUnavailable: the
// device, the session or the login went away. (Tag mismatches are classified
// by Unwrap itself.)
func (p *PKCS11) p11Error(op string, err error) error {
	return p.errorf(ErrUnavailable, err, "token %q: %s", p.tokenLabel, op)
}

// enter starts an operation: it fails fast on a done ctx or a closed keyring
// and otherwise holds life shared until the caller's p.life.RUnlock.
func (p *PKCS11) enter(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hsm: %s: %w", op, err)
	}
	p.life.RLock()
	if p.closed {
		p.life.RUnlock()
		return p.errorf(ErrClosed, nil, "%s: keyring closed", op)
	}
	return nil
}

// withSession runs f on a pooled session. f reports whether the session is
// still good to reuse; a session that saw an unexpected error is closed.
func (p *PKCS11) withSession(ctx context.Context, op string, f func(s pkcs11.SessionHandle) (reuse bool, err error)) error {
	s, err := p.pool.get(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("hsm: %s: %w", op, err)
		}
		return p.p11Error(op+": open session", err)
	}
	reuse, err := f(s)
	p.pool.put(s, reuse)
	return err
}

// Wrap implements Keyring: AES-256-GCM under the current KEK, inside the HSM.
func (p *PKCS11) Wrap(ctx context.Context, plaintext, aad []byte) (WrappedKey, error) {
	if err := p.enter(ctx, "wrap"); err != nil {
		return WrappedKey{}, err
	}
	defer p.life.RUnlock()
	version, kek := p.currentKEK()
	nonce := make([]byte, gcmNonceSize)
	_, _ = rand.Read(nonce) // crypto/rand does not fail; it crashes the program instead
	var ct []byte
	err := p.withSession(ctx, "wrap", func(s pkcs11.SessionHandle) (bool, error) {
		params := pkcs11.NewGCMParams(nonce, aad, gcmTagBits)
		defer params.Free()
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
		if err := p.mod.EncryptInit(s, mech, kek); err != nil {
			return false, p.p11Error("wrap: C_EncryptInit", err)
		}
		out, err := p.mod.Encrypt(s, plaintext)
		if err != nil {
			return false, p.p11Error("wrap: C_Encrypt", err)
		}
		if len(out) != len(plaintext)+gcmTagSize {
			return false, p.errorf(ErrUnavailable, nil, "token %q: wrap: HSM returned %d bytes for %d", p.tokenLabel, len(out), len(plaintext))
		}
		// Some HSMs (CloudHSM, FIPS-mode firmware) replace the caller's IV
		// with their own and write it back; store the one actually used.
		if iv := params.IV(); !bytes.Equal(iv, nonce) {
			if len(iv) != gcmNonceSize {
				return false, p.errorf(ErrUnavailable, nil, "token %q: wrap: HSM used a %d-byte IV", p.tokenLabel, len(iv))
			}
			nonce = iv
		}
		ct = out
		return true, nil
	})
	if err != nil {
		return WrappedKey{}, err
	}
	return WrappedKey{KEKVersion: version, Nonce: nonce, Ciphertext: ct}, nil
}

// Unwrap implements Keyring. A blob that fails authentication (tampered,
// other AAD, other KEK, unknown version, malformed) fails with ErrUnwrap;
// an HSM that does not answer fails with ErrUnavailable.
func (p *PKCS11) Unwrap(ctx context.Context, w WrappedKey, aad []byte) (secret.Bytes, error) {
	if err := p.enter(ctx, "unwrap"); err != nil {
		return secret.Bytes{}, err
	}
	defer p.life.RUnlock()
	if len(w.Nonce) != gcmNonceSize || len(w.Ciphertext) < gcmTagSize {
		return secret.Bytes{}, p.errorf(ErrUnwrap, nil, "unwrap: malformed wrapped key")
	}
	kek, ok := p.kek(w.KEKVersion)
	if !ok {
		return secret.Bytes{}, p.errorf(ErrUnwrap, nil, "unwrap: unknown KEK version %d", w.KEKVersion)
	}
	var pt []byte
	err := p.withSession(ctx, "unwrap", func(s pkcs11.SessionHandle) (bool, error) {
		params := pkcs11.NewGCMParams(w.Nonce, aad, gcmTagBits)
		defer params.Free()
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
		if err := p.mod.DecryptInit(s, mech, kek); err != nil {
			return false, p.p11Error("unwrap: C_DecryptInit", err)
		}
		out, err := p.mod.Decrypt(s, w.Ciphertext)
		if err == nil {
			pt = out
			return true, nil
		}
		var code pkcs11.Error
		errors.As(err, &code)
		switch code {
		case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE,
			pkcs11.CKR_SIGNATURE_INVALID, ckrAEADDecryptFailed:
			return true, p.errorf(ErrUnwrap, nil, "unwrap: authentication failed (KEK version %d)", w.KEKVersion)
		case pkcs11.CKR_GENERAL_ERROR:
			// SoftHSMv2 reports a GCM tag mismatch as CKR_GENERAL_ERROR.
			// Tell it from a sick device by asking the same session
			// whether it is still logged in.
			if p.sessionLoggedIn(s) {
				return true, p.errorf(ErrUnwrap, nil, "unwrap: authentication failed (KEK version %d)", w.KEKVersion)
			}
		}
		return false, p.p11Error("unwrap: C_Decrypt", err)
	})
	if err != nil {
		return secret.Bytes{}, err
	}
	return secret.NewBytes(pt), nil
}

func (p *PKCS11) sessionLoggedIn(s pkcs11.SessionHandle) bool {
	si, err := p.mod.GetSessionInfo(s)
	return err == nil && (si.State == pkcs11.CKS_RO_USER_FUNCTIONS || si.State == pkcs11.CKS_RW_USER_FUNCTIONS)
}

// Ping implements Keyring: one C_GenerateRandom(1) (a round trip to the
// device, not just the client library), a check that the session is still
// logged in, and one attribute read of the current KEK, so a token whose key
// object is gone (wiped, or an HSM restarted or failed over) is not reported
// healthy while every unwrap would fail. When only the KEK handle has gone
// stale, Ping finds the KEKs by label again (as Open does, with the same
// policy checks) and pings once more: object handles are not stable across
// an HSM restart, and this is how vaultd recovers without a restart.
func (p *PKCS11) Ping(ctx context.Context) error {
	if err := p.enter(ctx, "ping"); err != nil {
		return err
	}
	defer p.life.RUnlock()
	stale, err := p.ping(ctx)
	if !stale {
		return err
	}
	p.rotMu.Lock()
	keks, serr := p.scan(ctx)
	if serr == nil && len(keks) > 0 {
		p.install(keks)
	}
	p.rotMu.Unlock()
	if serr != nil || len(keks) == 0 {
		return err
	}
	p.logger.Warn("hsm: KEK handle was stale; found the KEKs by label again",
		"token", p.tokenLabel, "kek_label", p.kekLabel, "kek_version", p.CurrentVersion())
	_, err = p.ping(ctx)
	return err
}

// ping is one health check; stale reports that only the KEK read failed.
func (p *PKCS11) ping(ctx context.Context) (stale bool, err error) {
	err = p.withSession(ctx, "ping", func(s pkcs11.SessionHandle) (bool, error) {
		if _, err := p.mod.GenerateRandom(s, 1); err != nil {
			return false, p.p11Error("ping: C_GenerateRandom", err)
		}
		if !p.sessionLoggedIn(s) {
			return false, p.errorf(ErrUnavailable, nil, "token %q: ping: session not logged in", p.tokenLabel)
		}
		v, h := p.currentKEK()
		if _, err := p.mod.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)}); err != nil {
			stale = true
			return true, p.errorf(ErrUnavailable, err, "token %q: ping: KEK %q version %d not readable", p.tokenLabel, p.kekLabel, v)
		}
		return true, nil
	})
	return stale, err
}

// CurrentVersion implements Keyring.
func (p *PKCS11) CurrentVersion() uint32 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.current
}

func (p *PKCS11) currentKEK() (uint32, pkcs11.ObjectHandle) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.current, p.keks[p.current].handle
}

func (p *PKCS11) kek(version uint32) (pkcs11.ObjectHandle, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	k, ok := p.keks[version]
	return k.handle, ok
}

// Close implements Keyring. It waits for running operations, closes the
// pooled sessions and drops crypto11's module reference (which finalises the
// module when it was the last). Closing twice is a no-op.
func (p *PKCS11) Close() error {
	p.life.Lock()
	defer p.life.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.pool != nil {
		p.pool.close()
	}
	if p.mod != nil {
		p.mod.Destroy() // dlclose only; never C_Finalize under crypto11
	}
	if p.c11 != nil {
		return p.c11.Close()
	}
	return nil
}

// RotateKEK implements KEKRotator: it creates KEK version n+1 (n = the
// highest version on the token) and makes it current. Older versions stay on
// the token for Unwrap.
func (p *PKCS11) RotateKEK(ctx context.Context) (uint32, error) {
	if err := p.enter(ctx, "rotate KEK"); err != nil {
		return 0, err
	}
	defer p.life.RUnlock()
	p.rotMu.Lock()
	defer p.rotMu.Unlock()
	keks, err := p.scan(ctx) // another process may have rotated meanwhile
	if err != nil {
		return 0, err
	}
	if len(keks) == 0 {
		return 0, p.errorf(ErrKEKNotFound, nil, "token %q: no KEK labelled %q", p.tokenLabel, p.kekLabel)
	}
	cur := maxVersion(keks)
	if cur == ^uint32(0) {
		return 0, p.errorf(ErrKEKInvalid, nil, "token %q: KEK version space exhausted", p.tokenLabel)
	}
	next := cur + 1
	if err := p.generate(ctx, next); err != nil {
		return 0, err
	}
	keks, err = p.scan(ctx)
	if err != nil {
		return 0, err
	}
	if _, ok := keks[next]; !ok {
		return 0, p.errorf(ErrUnavailable, nil, "token %q: generated KEK version %d not found", p.tokenLabel, next)
	}
	p.install(keks)
	p.logger.Info("hsm: KEK rotated", "token", p.tokenLabel, "kek_label", p.kekLabel, "kek_version", next)
	return next, nil
}

// Reload implements Reloader: it re-reads the KEK versions from the token,
// e.g. after another process ran RotateKEK. It keeps the old set on error.
func (p *PKCS11) Reload(ctx context.Context) error {
	if err := p.enter(ctx, "reload KEKs"); err != nil {
		return err
	}
	defer p.life.RUnlock()
	p.rotMu.Lock()
	defer p.rotMu.Unlock()
	keks, err := p.scan(ctx)
	if err != nil {
		return err
	}
	if len(keks) == 0 {
		return p.errorf(ErrKEKNotFound, nil, "token %q: no KEK labelled %q", p.tokenLabel, p.kekLabel)
	}
	p.install(keks)
	return nil
}

// KEKInfo implements KEKInspector: it reads the attributes of every KEK
// version back from the token, oldest first. It validates nothing, so it
// also shows a bad key set.
func (p *PKCS11) KEKInfo(ctx context.Context) ([]KEKInfo, error) {
	if err := p.enter(ctx, "KEK info"); err != nil {
		return nil, err
	}
	defer p.life.RUnlock()
	objs, err := p.findKEKObjects(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]KEKInfo, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.info)
	}
	slices.SortFunc(out, func(a, b KEKInfo) int { return cmp.Compare(a.Version, b.Version) })
	return out, nil
}

func (p *PKCS11) install(keks map[uint32]kekObject) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keks = keks
	p.current = maxVersion(keks)
}

func maxVersion(keks map[uint32]kekObject) uint32 {
	var v uint32
	for k := range keks {
		v = max(v, k)
	}
	return v
}

// scan finds and validates the KEK set: every object carrying the label must
// pass the policy and have a distinct 4-byte version. One bad object fails
// the whole set (fail closed).
func (p *PKCS11) scan(ctx context.Context) (map[uint32]kekObject, error) {
	objs, err := p.findKEKObjects(ctx)
	if err != nil {
		return nil, err
	}
	keks := make(map[uint32]kekObject, len(objs))
	for _, o := range objs {
		if o.info.Version == 0 {
			return nil, p.errorf(ErrKEKInvalid, nil, "token %q: KEK %q: CKA_ID is not a 4-byte version >= 1", p.tokenLabel, p.kekLabel)
		}
		if bad := o.info.policyViolation(); bad != "" {
			return nil, p.errorf(ErrKEKInvalid, nil, "token %q: KEK %q version %d: %s", p.tokenLabel, p.kekLabel, o.info.Version, bad)
		}
		if _, dup := keks[o.info.Version]; dup {
			return nil, p.errorf(ErrKEKInvalid, nil, "token %q: KEK %q: version %d exists twice", p.tokenLabel, p.kekLabel, o.info.Version)
		}
		if !o.info.AlwaysSensitive || !o.info.NeverExtractable {
			// Legitimate for a KEK cloned between HSMs by key ceremony, but
			// worth an operator's attention.
			p.logger.Warn("hsm: KEK was not generated sensitive and non-extractable on this token",
				"token", p.tokenLabel, "kek_label", p.kekLabel, "kek_version", o.info.Version,
				"always_sensitive", o.info.AlwaysSensitive, "never_extractable", o.info.NeverExtractable)
		}
		keks[o.info.Version] = o
	}
	return keks, nil
}

// findKEKObjects lists the secret-key token objects labelled kekLabel with
// their attributes. Version is 0 when CKA_ID is not 4 bytes.
func (p *PKCS11) findKEKObjects(ctx context.Context) ([]kekObject, error) {
	var objs []kekObject
	err := p.withSession(ctx, "find KEK", func(s pkcs11.SessionHandle) (bool, error) {
		tmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, p.kekLabel),
		}
		if err := p.mod.FindObjectsInit(s, tmpl); err != nil {
			return false, p.p11Error("find KEK: C_FindObjectsInit", err)
		}
		var handles []pkcs11.ObjectHandle
		for len(handles) <= maxKEKObjects {
			hs, _, err := p.mod.FindObjects(s, 64)
			if err != nil {
				_ = p.mod.FindObjectsFinal(s)
				return false, p.p11Error("find KEK: C_FindObjects", err)
			}
			if len(hs) == 0 {
				break
			}
			handles = append(handles, hs...)
		}
		if err := p.mod.FindObjectsFinal(s); err != nil {
			return false, p.p11Error("find KEK: C_FindObjectsFinal", err)
		}
		if len(handles) > maxKEKObjects {
			return true, p.errorf(ErrKEKInvalid, nil, "token %q: more than %d objects labelled %q", p.tokenLabel, maxKEKObjects, p.kekLabel)
		}
		for _, h := range handles {
			info, err := p.readKEKInfo(s, h)
			if err != nil {
				return false, err
			}
			objs = append(objs, kekObject{handle: h, info: info})
		}
		return true, nil
	})
	return objs, err
}

func (p *PKCS11) readKEKInfo(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) (KEKInfo, error) {
	types := []uint{
		pkcs11.CKA_ID, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_VALUE_LEN, pkcs11.CKA_TOKEN,
		pkcs11.CKA_PRIVATE, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE,
		pkcs11.CKA_ALWAYS_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE,
		pkcs11.CKA_ENCRYPT, pkcs11.CKA_DECRYPT, pkcs11.CKA_MODIFIABLE,
	}
	tmpl := make([]*pkcs11.Attribute, len(types))
	for i, t := range types {
		tmpl[i] = pkcs11.NewAttribute(t, nil)
	}
	attrs, err := p.mod.GetAttributeValue(s, h, tmpl)
	if err != nil {
		return KEKInfo{}, p.p11Error("read KEK attributes", err)
	}
	info := KEKInfo{Label: p.kekLabel}
	for _, a := range attrs {
		switch a.Type {
		case pkcs11.CKA_ID:
			if len(a.Value) == 4 {
				info.Version = binary.BigEndian.Uint32(a.Value)
			}
		case pkcs11.CKA_KEY_TYPE:
			if kt, ok := ulong(a.Value); ok && kt == pkcs11.CKK_AES {
				info.KeyType = "AES"
			} else {
				info.KeyType = fmt.Sprintf("0x%x", kt)
			}
		case pkcs11.CKA_VALUE_LEN:
			n, _ := ulong(a.Value)
			info.Bytes = int(min(n, 1<<20))
		case pkcs11.CKA_TOKEN:
			info.Token = boolAttr(a.Value)
		case pkcs11.CKA_PRIVATE:
			info.Private = boolAttr(a.Value)
		case pkcs11.CKA_SENSITIVE:
			info.Sensitive = boolAttr(a.Value)
		case pkcs11.CKA_EXTRACTABLE:
			info.Extractable = boolAttr(a.Value)
		case pkcs11.CKA_ALWAYS_SENSITIVE:
			info.AlwaysSensitive = boolAttr(a.Value)
		case pkcs11.CKA_NEVER_EXTRACTABLE:
			info.NeverExtractable = boolAttr(a.Value)
		case pkcs11.CKA_ENCRYPT:
			info.Encrypt = boolAttr(a.Value)
		case pkcs11.CKA_DECRYPT:
			info.Decrypt = boolAttr(a.Value)
		case pkcs11.CKA_MODIFIABLE:
			info.Modifiable = boolAttr(a.Value)
		}
	}
	return info, nil
}

func boolAttr(v []byte) bool { return len(v) == 1 && v[0] != 0 }

// ulong decodes a CK_ULONG attribute (native byte order, 4 or 8 bytes).
func ulong(v []byte) (uint64, bool) {
	switch len(v) {
	case 8:
		return binary.NativeEndian.Uint64(v), true
	case 4:
		return uint64(binary.NativeEndian.Uint32(v)), true
	}
	return 0, false
}

// kekTemplate is the attribute template of a new KEK version: an AES-256
// token object that is private (login needed), sensitive, never extractable,
// usable only to encrypt/decrypt (no wrap/unwrap, sign, derive), and not
// modifiable afterwards.
func kekTemplate(label string, version uint32) []*pkcs11.Attribute {
	id := binary.BigEndian.AppendUint32(nil, version)
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, kekBytes),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
}

// generate creates KEK version v with CKM_AES_KEY_GEN through crypto11.
func (p *PKCS11) generate(ctx context.Context, v uint32) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hsm: generate KEK: %w", err)
	}
	tmpl := crypto11.NewAttributeSet()
	tmpl.AddIfNotPresent(kekTemplate(p.kekLabel, v))
	if _, err := p.c11.GenerateSecretKeyWithAttributes(tmpl, kekBytes*8, crypto11.CipherAES); err != nil {
		return p.p11Error(fmt.Sprintf("generate KEK version %d", v), err)
	}
	return nil
}

// sessionPool is a bounded pool of read-only sessions on one slot. Read-only
// is enough for encrypt/decrypt/find on token objects and cannot create or
// destroy them.
type sessionPool struct {
	mod  *pkcs11.Ctx
	slot uint
	sem  chan struct{}             // one token per session handed out
	idle chan pkcs11.SessionHandle // sessions ready for reuse
}

func newSessionPool(mod *pkcs11.Ctx, slot uint, size int) *sessionPool {
	return &sessionPool{
		mod:  mod,
		slot: slot,
		sem:  make(chan struct{}, size),
		idle: make(chan pkcs11.SessionHandle, size),
	}
}

// get waits (honouring ctx) for a free slot in the pool, then reuses an idle
// session or opens a new one.
func (sp *sessionPool) get(ctx context.Context) (pkcs11.SessionHandle, error) {
	select {
	case sp.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case s := <-sp.idle:
		return s, nil
	default:
	}
	s, err := sp.mod.OpenSession(sp.slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		<-sp.sem
		return 0, err
	}
	return s, nil
}

// put returns s for reuse, or closes it when it is suspect.
func (sp *sessionPool) put(s pkcs11.SessionHandle, reuse bool) {
	if reuse {
		sp.idle <- s // never blocks: idle holds at most cap(sem) sessions
	} else {
		_ = sp.mod.CloseSession(s)
	}
	<-sp.sem
}

// close closes the idle sessions. The caller guarantees none is in use.
func (sp *sessionPool) close() {
	for {
		select {
		case s := <-sp.idle:
			_ = sp.mod.CloseSession(s)
		default:
			return
		}
	}
}
