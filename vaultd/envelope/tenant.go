package envelope

// The tenant layer (crypto-shredding). When the keyring is an
// hsm.TenantKeyring, a DEK is wrapped twice: inner = the tenant's own HSM
// key's wrap of the DEK (hsm.TenantKeyring.WrapForTenant), outer = the
// KEK's wrap of that blob, with its own additional data (dekTenantAAD), and
// the record says so (storage.WrappedDEK.TenantWrapped). KEK rotation
// re-wraps only the outer layer; destroying the tenant key (Shred) makes
// every copy of the wrapped DEK, backups included, impossible to unwrap,
// even with the same HSM and KEK. A keyring without tenant keys keeps the
// single KEK wrap, and Shred can then only evict the cache
// (CryptoShredding reports which).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
)

var (
	// ErrShredded: the tenant's HSM key is gone (the tenant was
	// offboarded), so its tenant-wrapped DEKs can never be unwrapped
	// again. It also matches hsm.ErrTenantKeyNotFound.
	ErrShredded = errors.New("envelope: tenant key destroyed (crypto-shredded)")
	// ErrNoTenantKeyring: a DEK carries the tenant layer but the keyring
	// has no tenant keys (hsm.TenantKeyring) to remove it with.
	ErrNoTenantKeyring = errors.New("envelope: DEK is tenant-wrapped but the keyring has no tenant keys")
)

const dekTenantAADLabel = "vaultd/dek-tenant/v1"

// dekTenantAAD is the outer (KEK) layer's additional data of a
// tenant-wrapped DEK: like dekAAD with its own label, so a record whose
// TenantWrapped flag was flipped fails to unwrap rather than being read as
// the other kind.
func dekTenantAAD(tenantID string, version uint32) []byte {
	b := make([]byte, 0, len(dekTenantAADLabel)+1+4+len(tenantID)+4)
	b = append(b, dekTenantAADLabel...)
	b = append(b, 0)
	b = appendString(b, tenantID)
	return binary.BigEndian.AppendUint32(b, version)
}

// outerAAD is the KEK layer's additional data for w.
func outerAAD(tenantID string, w storage.WrappedDEK) []byte {
	if w.TenantWrapped {
		return dekTenantAAD(tenantID, w.Version)
	}
	return dekAAD(tenantID, w.Version)
}

// CryptoShredding reports whether the keyring has tenant keys: new DEKs
// get the tenant layer and Shred destroys the tenant's key. Without them
// vaultd reports crypto-shredding as unavailable.
func (k *Keys) CryptoShredding() bool { return k.tk != nil }

// wrapDEK wraps a plaintext DEK for tenantID: twice (tenant key, then
// KEK) when the keyring has tenant keys, creating the tenant's key first;
// under the KEK alone otherwise.
func (k *Keys) wrapDEK(ctx context.Context, tenantID string, version uint32, dek []byte) (storage.WrappedDEK, error) {
	out := storage.WrappedDEK{Version: version}
	inner := dek
	if k.tk != nil {
		if err := k.tk.CreateTenantKey(ctx, tenantID); err != nil {
			return out, fmt.Errorf("envelope: tenant key for %q: %w", tenantID, err)
		}
		blob, err := k.tk.WrapForTenant(ctx, tenantID, dek)
		if err != nil {
			return out, fmt.Errorf("envelope: wrap DEK for tenant %q version %d under its tenant key: %w", tenantID, version, err)
		}
		inner, out.TenantWrapped = blob, true
	}
	w, err := k.kr.Wrap(ctx, inner, outerAAD(tenantID, out))
	if err != nil {
		return out, fmt.Errorf("envelope: wrap DEK for tenant %q version %d: %w", tenantID, version, err)
	}
	out.KEKVersion, out.Nonce, out.Ciphertext = w.KEKVersion, w.Nonce, w.Ciphertext
	return out, nil
}

// unwrapOuter removes the KEK layer: the DEK itself, or the tenant-wrapped
// blob when w.TenantWrapped. The caller wipes it.
func (k *Keys) unwrapOuter(ctx context.Context, tenantID string, w storage.WrappedDEK) (secret.Bytes, error) {
	pt, err := k.kr.Unwrap(ctx, hsm.WrappedKey{KEKVersion: w.KEKVersion, Nonce: w.Nonce, Ciphertext: w.Ciphertext}, outerAAD(tenantID, w))
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("envelope: unwrap DEK for tenant %q version %d: %w", tenantID, w.Version, err)
	}
	want := KeySize
	if w.TenantWrapped {
		// The blob's size follows from the scheme it records (hsm.Scheme:
		// tokens without AES-GCM wrap with another).
		want = -1
		if s, _, _, _, err := hsm.ParseTenantWrappedScheme(tenantID, pt.Reveal()); err == nil {
			want = hsm.TenantWrappedLen(tenantID, s, KeySize)
		}
	}
	if pt.Len() != want {
		pt.Wipe()
		return secret.Bytes{}, fmt.Errorf("envelope: unwrapped DEK for tenant %q version %d: %w (got %d)", tenantID, w.Version, ErrKeySize, pt.Len())
	}
	return pt, nil
}

// unwrapDEK removes every layer of w and writes the DEK into dst
// (KeySize bytes, locked memory); every intermediate copy is wiped.
func (k *Keys) unwrapDEK(ctx context.Context, tenantID string, w storage.WrappedDEK, dst []byte) error {
	if w.TenantWrapped && k.tk == nil {
		return fmt.Errorf("envelope: DEK for tenant %q version %d: %w", tenantID, w.Version, ErrNoTenantKeyring)
	}
	outer, err := k.unwrapOuter(ctx, tenantID, w)
	if err != nil {
		return err
	}
	defer outer.Wipe()
	if !w.TenantWrapped {
		copy(dst, outer.Reveal())
		return nil
	}
	dek, err := k.tk.UnwrapForTenant(ctx, tenantID, outer.Reveal())
	defer clear(dek)
	if errors.Is(err, hsm.ErrTenantKeyNotFound) {
		return fmt.Errorf("envelope: DEK for tenant %q version %d: %w: %w", tenantID, w.Version, ErrShredded, err)
	}
	if err != nil {
		return fmt.Errorf("envelope: unwrap DEK for tenant %q version %d under its tenant key: %w", tenantID, w.Version, err)
	}
	if len(dek) != KeySize {
		return fmt.Errorf("envelope: unwrapped DEK for tenant %q version %d: %w (got %d)", tenantID, w.Version, ErrKeySize, len(dek))
	}
	copy(dst, dek)
	return nil
}

// UpgradeDEK brings one of tenantID's DEKs to the current format: a DEK
// without the tenant layer is unwrapped from the KEK and wrapped under the
// tenant's key (created if needed) and then the current KEK; a
// tenant-wrapped DEK under another KEK version than current gets its outer
// layer re-wrapped (RewrapDEK). The key, its version and CreatedAt stay;
// the plaintext DEK is only in locked memory and wiped before returning.
// A DEK already current, or any DEK when the keyring has no tenant keys,
// comes back unchanged with changed false. On error w comes back as it was.
func (k *Keys) UpgradeDEK(ctx context.Context, tenantID string, w storage.WrappedDEK, current uint32) (out storage.WrappedDEK, changed bool, err error) {
	if k.tk == nil {
		return w, false, nil
	}
	if w.TenantWrapped {
		return k.RewrapDEK(ctx, tenantID, w, current)
	}
	if !storage.ValidID(tenantID) {
		return w, false, fmt.Errorf("%w: tenant id", ErrAAD)
	}
	if err := k.checkOpen(); err != nil {
		return w, false, err
	}
	buf, err := k.allocBuf()
	if err != nil {
		return w, false, err
	}
	defer func() { _ = buf.Free() }()
	if err := k.unwrapDEK(ctx, tenantID, w, buf.Bytes()); err != nil {
		return w, false, err
	}
	nw, err := k.wrapDEK(ctx, tenantID, w.Version, buf.Bytes())
	if err != nil {
		return w, false, err
	}
	out = w
	out.KEKVersion, out.Nonce, out.Ciphertext, out.TenantWrapped = nw.KEKVersion, nw.Nonce, nw.Ciphertext, nw.TenantWrapped
	return out, true, nil
}

// Shred crypto-shreds tenantID: it evicts (and zeroes) every cached DEK
// of the tenant and destroys the tenant's HSM key, after which no copy of
// its tenant-wrapped DEKs (a backup included) unwraps: ErrShredded.
// Idempotent: an already destroyed key is not an error. Without tenant
// keys it only evicts (CryptoShredding is false). A failed destroy is
// returned (retry it: the key may still exist); the cache is evicted
// whatever happens.
func (k *Keys) Shred(ctx context.Context, tenantID string) error {
	if !storage.ValidID(tenantID) {
		return fmt.Errorf("%w: tenant id", ErrAAD)
	}
	k.Evict(tenantID)
	// Evict again after the destroy: a load that unwrapped before it must
	// not leave the DEK cached.
	defer k.Evict(tenantID)
	if k.tk == nil {
		return nil
	}
	if err := k.tk.DestroyTenantKey(ctx, tenantID); err != nil {
		return fmt.Errorf("envelope: shred tenant %q: %w", tenantID, err)
	}
	return nil
}
