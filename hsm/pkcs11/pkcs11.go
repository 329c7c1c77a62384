//go:build cgo

package pkcs11

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
)

// PKCS11 is the hsm.Keyring backed by a PKCS#11 token. Create it with Open.
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

	// The wrapping scheme (schemes.go), negotiated once in open and
	// read-only afterwards, and the token's mechanism list.
	mechs Mechanisms
	neg   negotiated

	mu      sync.RWMutex // guards keks, current, macKey and hasMAC
	keks    map[uint32]kekObject
	current uint32
	macKey  pkcs11.ObjectHandle // "<kek_label>-mac", for the CBC-HMAC scheme
	hasMAC  bool

	// Tenant keys (tenant.go). tenantOpMu serialises creates and destroys;
	// tmu guards the handle cache and its epoch (bumped by each eviction).
	tenantOpMu  sync.Mutex
	tmu         sync.Mutex
	tenantCache map[string][]pkcs11.ObjectHandle
	tenantEpoch uint64
}

type kekObject struct {
	handle pkcs11.ObjectHandle
	info   hsm.KEKInfo
}

var (
	_ hsm.Keyring      = (*PKCS11)(nil)
	_ hsm.KEKRotator   = (*PKCS11)(nil)
	_ hsm.Reloader     = (*PKCS11)(nil)
	_ hsm.KEKInspector = (*PKCS11)(nil)
)

// Open loads the module, logs in to the token, negotiates the wrapping
// scheme (hsm.Scheme; cfg.ForceScheme overrides) and finds the KEK versions
// labelled cfg.KEKLabel; the highest is current. Without a KEK it fails with
// hsm.ErrKEKNotFound (vaultd never creates one; see InitKEK). A KEK object
// that breaks the policy (extractable, not sensitive, ...) fails with
// hsm.ErrKEKInvalid. It ends with a wrap/unwrap round trip under the
// current KEK and under a throwaway tenant-like key: a token with no usable
// scheme, or one that lists a mechanism it cannot run, fails with
// hsm.ErrMechanism and a one-line reason.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*PKCS11, error) {
	p, err := open(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	keks, err := p.scan(ctx)
	if err == nil && len(keks) == 0 {
		err = p.errorf(hsm.ErrKEKNotFound, nil, "token %q: no KEK labelled %q (run 'vaultctl init')", p.tokenLabel, p.kekLabel)
	}
	if err == nil {
		p.install(keks)
		err = p.loadMACKey(ctx)
	}
	if err == nil {
		err = p.selfTest(ctx, true)
	}
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	p.logger.Info("hsm: keyring open", "token", p.tokenLabel, "kek_label", p.kekLabel,
		"kek_version", p.CurrentVersion(), "kek_versions", len(keks), "scheme", p.neg.scheme.String())
	return p, nil
}

// InitKEK creates KEK version 1 labelled cfg.KEKLabel unless a KEK with that
// label already exists, in which case it changes nothing and reports the
// current version with created=false. When the negotiated scheme is
// AES-CBC-PAD+SHA256-HMAC it also creates the MAC key "<kek_label>-mac"
// (InitMACKey), and it ends with the wrap/unwrap round trip Open runs. Existing KEK objects that break the
// policy fail with hsm.ErrKEKInvalid. Two InitKEK runs racing on one token
// can both create version 1; Open then refuses the duplicate
// (hsm.ErrKEKInvalid), so the race fails closed. Run it from one place
// ('vaultctl init').
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
	if len(keks) == 0 {
		if err := p.generate(ctx, 1); err != nil {
			return 0, false, err
		}
		keks, err = p.scan(ctx)
		if err != nil {
			return 0, false, err
		}
		if _, ok := keks[1]; !ok {
			return 0, false, p.errorf(hsm.ErrUnavailable, nil, "token %q: generated KEK version 1 not found", p.tokenLabel)
		}
		created = true
		p.logger.Info("hsm: KEK created", "token", p.tokenLabel, "kek_label", p.kekLabel, "kek_version", 1)
	}
	p.install(keks)
	if p.neg.scheme == hsm.SchemeAESCBCHMAC {
		if _, err := p.createMACKey(ctx); err != nil {
			return 0, false, err
		}
	}
	if err := p.loadMACKey(ctx); err != nil {
		return 0, false, err
	}
	if err := p.selfTest(ctx, true); err != nil {
		return 0, false, err
	}
	return maxVersion(keks), created, nil
}

// InitMACKey creates the MAC key "<kek_label>-mac" (HMAC-SHA256, sensitive,
// never extractable) that the AES-CBC-PAD+SHA256-HMAC scheme needs, unless
// it exists; created reports whether it made one. The token must offer
// CKM_SHA256_HMAC. InitKEK runs it when that scheme is the negotiated one.
func InitMACKey(ctx context.Context, cfg Config, logger *slog.Logger) (created bool, err error) {
	cfg.ForceScheme = hsm.SchemeAESCBCHMAC
	p, err := open(ctx, cfg, logger)
	if err != nil {
		return false, err
	}
	defer func() { _ = p.Close() }()
	return p.createMACKey(ctx)
}

// CurrentVersion implements hsm.Keyring.
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

// Close implements hsm.Keyring. It waits for running operations, closes the
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

func (p *PKCS11) errorf(kind, cause error, format string, args ...any) error {
	return &hsm.Error{Msg: "hsm: " + fmt.Sprintf(format, args...), Kind: kind, Cause: cause}
}

// p11Error maps a failed PKCS#11 call outside login to hsm.ErrUnavailable: the
// device, the session or the login went away. (Tag mismatches are classified
// by Unwrap itself.)
func (p *PKCS11) p11Error(op string, err error) error {
	return p.errorf(hsm.ErrUnavailable, err, "token %q: %s", p.tokenLabel, op)
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
		return p.errorf(hsm.ErrClosed, nil, "%s: keyring closed", op)
	}
	return nil
}
