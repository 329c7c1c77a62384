// Package hsmtest has a software Keyring for unit tests of other packages
// (Fake) and the behaviour suite every Keyring implementation passes
// (RunKeyringSuite), so the fake cannot drift from the PKCS#11 backend.
package hsmtest

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/secret"
)

// Fake is an in-memory Keyring: AES-256-GCM in Go with random KEKs and
// tenant keys (hsm.TenantKeyring, tenant.go), the same blob shape and errors
// as the PKCS#11 backend. Safe for concurrent use.
type Fake struct {
	// Fail, while set, makes every call that takes a context fail with
	// hsm.ErrUnavailable (an HSM outage).
	Fail atomic.Bool

	wraps, unwraps, pings atomic.Int64

	mu       sync.Mutex
	keks     map[uint32]cipher.AEAD
	current  uint32
	failNext []error
	closed   bool
	auditKey *ecdsa.PrivateKey // nil after DropAuditKey

	tenantKeys                    map[string]cipher.AEAD // tenant.go
	tenantCreates, tenantDestroys int
}

var (
	_ hsm.Keyring     = (*Fake)(nil)
	_ hsm.KEKRotator  = (*Fake)(nil)
	_ hsm.AuditSigner = (*Fake)(nil)
)

// NewFake returns a Fake with KEK version 1 and an ECDSA P-256 audit key.
func NewFake() *Fake {
	ak, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	f := &Fake{keks: map[uint32]cipher.AEAD{}, auditKey: ak}
	f.Rotate()
	return f
}

// DropAuditKey removes the audit key, as on a token where 'vaultctl init'
// has not created it yet: SignAudit and AuditPublicKey then fail with
// hsm.ErrAuditKeyNotFound.
func (f *Fake) DropAuditKey() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auditKey = nil
}

// SignAudit implements hsm.AuditSigner: ECDSA P-256 over digest, raw r||s.
func (f *Fake) SignAudit(ctx context.Context, digest []byte) ([]byte, error) {
	if err := f.enter(ctx, "sign audit checkpoint"); err != nil {
		return nil, err
	}
	if len(digest) != 32 {
		return nil, fmt.Errorf("hsm: sign audit checkpoint: digest is %d bytes, want 32", len(digest))
	}
	f.mu.Lock()
	k := f.auditKey
	f.mu.Unlock()
	if k == nil {
		return nil, fmt.Errorf("hsm: sign audit checkpoint: %w", hsm.ErrAuditKeyNotFound)
	}
	r, s, err := ecdsa.Sign(rand.Reader, k, digest)
	if err != nil {
		return nil, fmt.Errorf("hsm: sign audit checkpoint: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return sig, nil
}

// AuditPublicKey implements hsm.AuditSigner.
func (f *Fake) AuditPublicKey(ctx context.Context) (crypto.PublicKey, error) {
	if err := f.enter(ctx, "audit public key"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.auditKey == nil {
		return nil, fmt.Errorf("hsm: audit public key: %w", hsm.ErrAuditKeyNotFound)
	}
	return &f.auditKey.PublicKey, nil
}

// Rotate adds KEK version n+1 and makes it current; older versions still
// unwrap. It returns the new version.
func (f *Fake) Rotate() uint32 {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // 32-byte key: cannot happen
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.current++
	f.keks[f.current] = aead
	return f.current
}

// RotateKEK implements hsm.KEKRotator: Rotate, behind the same context,
// closed and injected-failure checks as every other call.
func (f *Fake) RotateKEK(ctx context.Context) (uint32, error) {
	if err := f.enter(ctx, "rotate KEK"); err != nil {
		return 0, err
	}
	return f.Rotate(), nil
}

// FailNext queues err: the next call that takes a context returns it
// (wrapped), whatever its kind. Queued errors are used in order.
func (f *Fake) FailNext(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = append(f.failNext, err)
}

// Wraps, Unwraps and Pings count calls (including failed ones, and the
// tenant-key wraps and unwraps), so tests can assert that a path makes no
// HSM call.
func (f *Fake) Wraps() int64   { return f.wraps.Load() }
func (f *Fake) Unwraps() int64 { return f.unwraps.Load() }
func (f *Fake) Pings() int64   { return f.pings.Load() }

// Calls is Wraps+Unwraps+Pings.
func (f *Fake) Calls() int64 { return f.Wraps() + f.Unwraps() + f.Pings() }

// enter mirrors the backend's order: context, closed, injected failures.
func (f *Fake) enter(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hsm: %s: %w", op, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("hsm: %s: %w", op, hsm.ErrClosed)
	}
	if len(f.failNext) > 0 {
		err := f.failNext[0]
		f.failNext = f.failNext[1:]
		return fmt.Errorf("hsm: %s (injected): %w", op, err)
	}
	if f.Fail.Load() {
		return fmt.Errorf("hsm: %s (injected): %w", op, hsm.ErrUnavailable)
	}
	return nil
}

// Wrap implements hsm.Keyring.
func (f *Fake) Wrap(ctx context.Context, plaintext, aad []byte) (hsm.WrappedKey, error) {
	f.wraps.Add(1)
	if err := f.enter(ctx, "wrap"); err != nil {
		return hsm.WrappedKey{}, err
	}
	f.mu.Lock()
	v, aead := f.current, f.keks[f.current]
	f.mu.Unlock()
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	return hsm.WrappedKey{KEKVersion: v, Nonce: nonce, Ciphertext: aead.Seal(nil, nonce, plaintext, aad)}, nil
}

// Unwrap implements hsm.Keyring.
func (f *Fake) Unwrap(ctx context.Context, w hsm.WrappedKey, aad []byte) (secret.Bytes, error) {
	f.unwraps.Add(1)
	if err := f.enter(ctx, "unwrap"); err != nil {
		return secret.Bytes{}, err
	}
	f.mu.Lock()
	aead, ok := f.keks[w.KEKVersion]
	f.mu.Unlock()
	if !ok {
		return secret.Bytes{}, fmt.Errorf("hsm: unwrap: unknown KEK version %d: %w", w.KEKVersion, hsm.ErrUnwrap)
	}
	if len(w.Nonce) != aead.NonceSize() || len(w.Ciphertext) < aead.Overhead() {
		return secret.Bytes{}, fmt.Errorf("hsm: unwrap: malformed wrapped key: %w", hsm.ErrUnwrap)
	}
	pt, err := aead.Open(nil, w.Nonce, w.Ciphertext, aad)
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("hsm: unwrap: authentication failed (KEK version %d): %w", w.KEKVersion, hsm.ErrUnwrap)
	}
	if pt == nil {
		pt = []byte{}
	}
	return secret.NewBytes(pt), nil
}

// CurrentVersion implements hsm.Keyring.
func (f *Fake) CurrentVersion() uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current
}

// Ping implements hsm.Keyring.
func (f *Fake) Ping(ctx context.Context) error {
	f.pings.Add(1)
	return f.enter(ctx, "ping")
}

// Close implements hsm.Keyring. Closing twice is a no-op.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// ErrInjected is a convenient error for FailNext.
var ErrInjected = errors.New("hsmtest: injected failure")
