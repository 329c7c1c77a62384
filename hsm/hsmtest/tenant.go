package hsmtest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/ids"
)

// The Fake's hsm.TenantKeyring: one random AES-256 key per tenant, held in
// a map; DestroyTenantKey deletes it, after which nothing the key wrapped
// opens again, as in the HSM.

var _ hsm.TenantKeyring = (*Fake)(nil)

func (f *Fake) tenantEnter(ctx context.Context, op, tenantID string) error {
	if err := f.enter(ctx, op); err != nil {
		return err
	}
	if !ids.Valid(tenantID) {
		return fmt.Errorf("hsm: %s: invalid tenant id: %w", op, hsm.ErrTenantKeyNotFound)
	}
	return nil
}

func (f *Fake) tenantKey(tenantID string) (cipher.AEAD, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.tenantKeys[tenantID]
	return a, ok
}

// CreateTenantKey implements hsm.TenantKeyring.
func (f *Fake) CreateTenantKey(ctx context.Context, tenantID string) error {
	if err := f.tenantEnter(ctx, "create tenant key", tenantID); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tenantKeys[tenantID]; ok {
		return nil
	}
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
	if f.tenantKeys == nil {
		f.tenantKeys = map[string]cipher.AEAD{}
	}
	f.tenantKeys[tenantID] = aead
	f.tenantCreates++
	return nil
}

// WrapForTenant implements hsm.TenantKeyring.
func (f *Fake) WrapForTenant(ctx context.Context, tenantID string, plaintext []byte) ([]byte, error) {
	f.wraps.Add(1)
	if err := f.tenantEnter(ctx, "wrap for tenant", tenantID); err != nil {
		return nil, err
	}
	aead, ok := f.tenantKey(tenantID)
	if !ok {
		return nil, fmt.Errorf("hsm: wrap for tenant %q: %w", tenantID, hsm.ErrTenantKeyNotFound)
	}
	nonce := make([]byte, hsm.TenantWrapNonceSize)
	_, _ = rand.Read(nonce)
	ct := aead.Seal(nil, nonce, plaintext, hsm.TenantWrapAAD(tenantID, hsm.TenantWrapVersion))
	return hsm.AppendTenantWrapped(make([]byte, 0, hsm.TenantWrapOverhead+len(plaintext)), nonce, ct), nil
}

// UnwrapForTenant implements hsm.TenantKeyring.
func (f *Fake) UnwrapForTenant(ctx context.Context, tenantID string, wrapped []byte) ([]byte, error) {
	f.unwraps.Add(1)
	if err := f.tenantEnter(ctx, "unwrap for tenant", tenantID); err != nil {
		return nil, err
	}
	aead, ok := f.tenantKey(tenantID)
	if !ok {
		return nil, fmt.Errorf("hsm: unwrap for tenant %q: %w", tenantID, hsm.ErrTenantKeyNotFound)
	}
	nonce, ct, err := hsm.ParseTenantWrapped(wrapped)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, nonce, ct, hsm.TenantWrapAAD(tenantID, wrapped[0]))
	if err != nil {
		return nil, fmt.Errorf("hsm: unwrap for tenant %q: authentication failed: %w", tenantID, hsm.ErrUnwrap)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

// DestroyTenantKey implements hsm.TenantKeyring.
func (f *Fake) DestroyTenantKey(ctx context.Context, tenantID string) error {
	if err := f.tenantEnter(ctx, "destroy tenant key", tenantID); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tenantKeys[tenantID]; ok {
		delete(f.tenantKeys, tenantID)
		f.tenantDestroys++
	}
	return nil
}

// HasTenantKey implements hsm.TenantKeyring.
func (f *Fake) HasTenantKey(ctx context.Context, tenantID string) (bool, error) {
	if err := f.tenantEnter(ctx, "find tenant key", tenantID); err != nil {
		return false, err
	}
	_, ok := f.tenantKey(tenantID)
	return ok, nil
}

// TenantKeyStats counts tenant keys created and destroyed (not counting
// idempotent no-ops) and those present now, for tests.
func (f *Fake) TenantKeyStats() (created, destroyed, present int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tenantCreates, f.tenantDestroys, len(f.tenantKeys)
}
