//go:build !cgo

package pkcs11

import (
	"context"
	"crypto"
	"log/slog"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/secret"
)

// PKCS11 is the PKCS#11 keyring; without cgo there is none, and Open never
// returns one. The methods exist so that code holding a *PKCS11 as an
// hsm.Keyring builds either way.
type PKCS11 struct{}

var (
	_ hsm.Keyring       = (*PKCS11)(nil)
	_ hsm.TenantKeyring = (*PKCS11)(nil)
)

// Open fails with ErrNoCgo: this build cannot load a PKCS#11 module.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*PKCS11, error) {
	return nil, ErrNoCgo
}

// InitKEK fails with ErrNoCgo.
func InitKEK(ctx context.Context, cfg Config, logger *slog.Logger) (version uint32, created bool, err error) {
	return 0, false, ErrNoCgo
}

// Wrap fails with ErrNoCgo.
func (*PKCS11) Wrap(context.Context, []byte, []byte) (hsm.WrappedKey, error) {
	return hsm.WrappedKey{}, ErrNoCgo
}

// Unwrap fails with ErrNoCgo.
func (*PKCS11) Unwrap(context.Context, hsm.WrappedKey, []byte) (secret.Bytes, error) {
	return secret.Bytes{}, ErrNoCgo
}

// CurrentVersion is 0: there is no KEK.
func (*PKCS11) CurrentVersion() uint32 { return 0 }

// Ping fails with ErrNoCgo.
func (*PKCS11) Ping(context.Context) error { return ErrNoCgo }

// Close does nothing.
func (*PKCS11) Close() error { return nil }

// InitAuditKey fails with ErrNoCgo.
func InitAuditKey(ctx context.Context, cfg Config, logger *slog.Logger) (created bool, err error) {
	return false, ErrNoCgo
}

// SignAudit fails with ErrNoCgo.
func (*PKCS11) SignAudit(context.Context, []byte) ([]byte, error) { return nil, ErrNoCgo }

// AuditPublicKey fails with ErrNoCgo.
func (*PKCS11) AuditPublicKey(context.Context) (crypto.PublicKey, error) { return nil, ErrNoCgo }

// CreateTenantKey fails with ErrNoCgo.
func (*PKCS11) CreateTenantKey(context.Context, string) error { return ErrNoCgo }

// WrapForTenant fails with ErrNoCgo.
func (*PKCS11) WrapForTenant(context.Context, string, []byte) ([]byte, error) { return nil, ErrNoCgo }

// UnwrapForTenant fails with ErrNoCgo.
func (*PKCS11) UnwrapForTenant(context.Context, string, []byte) ([]byte, error) { return nil, ErrNoCgo }

// DestroyTenantKey fails with ErrNoCgo.
func (*PKCS11) DestroyTenantKey(context.Context, string) error { return ErrNoCgo }

// HasTenantKey fails with ErrNoCgo.
func (*PKCS11) HasTenantKey(context.Context, string) (bool, error) { return false, ErrNoCgo }

// Scheme is 0: there is no token to negotiate with.
func (*PKCS11) Scheme() hsm.Scheme { return 0 }

// InitMACKey fails with ErrNoCgo.
func InitMACKey(ctx context.Context, cfg Config, logger *slog.Logger) (created bool, err error) {
	return false, ErrNoCgo
}
