//go:build cgo

package pkcs11

// Loading the module, logging in, and the pool of sessions every call runs in.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
)

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
		return nil, p.errorf(hsm.ErrModule, nil, "no PKCS#11 module configured")
	case cfg.TokenLabel == "":
		return nil, p.errorf(hsm.ErrTokenNotFound, nil, "no token label configured")
	case cfg.KEKLabel == "":
		return nil, p.errorf(hsm.ErrKEKNotFound, nil, "no KEK label configured")
	case cfg.PIN.IsZero():
		// Some modules answer CKR_ARGUMENTS_BAD to an empty PIN; say what it is.
		return nil, p.errorf(hsm.ErrWrongPIN, nil, "token %q: empty PIN", cfg.TokenLabel)
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
		return nil, p.errorf(hsm.ErrModule, err, "module %q", cfg.Module)
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
		return fail(p.errorf(hsm.ErrModule, nil, "module %q: cannot load", cfg.Module))
	}
	p.mod = mod
	switch err := mod.Initialize(); {
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)):
	case err == nil:
		// A separate instance of the library: it would not share crypto11's
		// login. Undo our initialisation, which is ours alone.
		_ = mod.Finalize()
		return fail(p.errorf(hsm.ErrModule, nil, "module %q: not shared with the logged-in instance", cfg.Module))
	default:
		return fail(p.errorf(hsm.ErrModule, err, "module %q", cfg.Module))
	}
	slot, err := p.findSlot()
	if err != nil {
		return fail(err)
	}
	p.slot = slot
	p.pool = newSessionPool(mod, slot, maxSessions)
	if err := p.negotiate(cfg.ForceScheme); err != nil {
		p.pool.close()
		return fail(err)
	}
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
	return 0, p.errorf(hsm.ErrTokenNotFound, nil, "token %q: not present", p.tokenLabel)
}

// configureError maps a crypto11.Configure failure to a sentinel. crypto11
// v1.5.0 does not export its error values; its messages are matched here and
// pinned by the tests in this package.
func (p *PKCS11) configureError(module string, err error) error {
	msg := err.Error()
	var code pkcs11.Error
	switch {
	case strings.Contains(msg, "failed to create module context"):
		return p.errorf(hsm.ErrModule, err, "module %q: cannot load or initialise", module)
	case strings.Contains(msg, "could not find PKCS#11 token"):
		return p.errorf(hsm.ErrTokenNotFound, nil, "token %q: not present", p.tokenLabel)
	case errors.As(err, &code):
		switch code {
		case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
			return p.errorf(hsm.ErrWrongPIN, code, "token %q: wrong PIN", p.tokenLabel)
		case pkcs11.CKR_PIN_LOCKED:
			return p.errorf(hsm.ErrPINLocked, code, "token %q: PIN locked", p.tokenLabel)
		case pkcs11.CKR_PIN_EXPIRED:
			return p.errorf(hsm.ErrPINLocked, code, "token %q: PIN expired", p.tokenLabel)
		case pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_SLOT_ID_INVALID:
			return p.errorf(hsm.ErrTokenNotFound, code, "token %q: not present", p.tokenLabel)
		}
		return p.errorf(hsm.ErrUnavailable, code, "token %q: login", p.tokenLabel)
	}
	return p.errorf(hsm.ErrUnavailable, err, "token %q: open", p.tokenLabel)
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

func (p *PKCS11) sessionLoggedIn(s pkcs11.SessionHandle) bool {
	si, err := p.mod.GetSessionInfo(s)
	return err == nil && (si.State == pkcs11.CKS_RO_USER_FUNCTIONS || si.State == pkcs11.CKS_RW_USER_FUNCTIONS)
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
