// Package hsm is the contract between vaultd and the HSM that keeps its
// key-encryption key (KEK): the Keyring interface that wraps and unwraps
// data keys with a KEK that never leaves the HSM, the sentinel errors every
// backend reports (errors.go), WrappedKey, and the optional capabilities
// only some backends have (optional.go: KEKRotator, Reloader, KEKInspector,
// one method each, AuditSigner and TenantKeyring; found by type assertion),
// the blob format of TenantKeyring (tenant.go), and the wrapping schemes a
// backend negotiates with its token and records in every blob (scheme.go).
//
// It has no cgo and no backend. The PKCS#11 backend is hsm/pkcs11 (cgo);
// hsm/hsmtest has a software fake and the suite every Keyring passes.
package hsm

import (
	"context"

	"github.com/vaultd/vaultd/internal/secret"
)

// WrappedKey is a data key encrypted under one KEK version. Nonce names the
// scheme too (scheme.go): 12 bytes is an AES-GCM nonce; otherwise a scheme
// byte and that scheme's iv. ParseWrappedKey reads both.
type WrappedKey struct {
	KEKVersion uint32 `json:"kek_version"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"` // GCM: ciphertext || tag; see scheme.go
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
