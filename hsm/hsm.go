// Package hsm is the contract between vaultd and the HSM that keeps its
// key-encryption key (KEK): the Keyring interface that wraps and unwraps
// data keys with a KEK that never leaves the HSM, the sentinel errors every
// backend reports (errors.go), WrappedKey, and the optional capabilities
// only some backends have (optional.go: KEKRotator, Reloader, KEKInspector,
// one method each, AuditSigner and TenantKeyring; found by type assertion),
// and the blob format of TenantKeyring (tenant.go).
//
// It has no cgo and no backend. The PKCS#11 backend is hsm/pkcs11 (cgo);
// hsm/hsmtest has a software fake and the suite every Keyring passes.
package hsm

import (
	"context"

	"github.com/vaultd/vaultd/internal/secret"
)

// WrappedKey is a data key encrypted under one KEK version.
type WrappedKey struct {
	KEKVersion uint32 `json:"kek_version"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"` // ciphertext || GCM tag
}

// Keyring wraps and unwraps data keys with a KEK that never leaves the HSM.
// Every call takes a context and returns an error; nothing panics on HSM
// failure. Implementations are safe for concurrent use.
type Keyring interface {
	// Wrap encrypts plaintext (a DEK) under the current KEK. aad is bound to
	// the result: Unwrap with different aad fails with ErrUnwrap.
	Wrap(ctx context.Context, plaintext, aad []byte) (WrappedKey, error)
	// Unwrap decrypts w with the KEK version it names.
	Unwrap(ctx context.Context, w WrappedKey, aad []byte) (secret.Bytes, error)
	// CurrentVersion is the KEK version new wraps use.
	CurrentVersion() uint32
	// Ping is a cheap health check of the HSM session.
	Ping(ctx context.Context) error
	// Close releases sessions and the module.
	Close() error
}
