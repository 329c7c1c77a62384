// Package hsm keeps the key-encryption key (KEK) inside a PKCS#11 token and
// wraps/unwraps data keys with it. The rest of vaultd sees only the small
// Keyring interface; the PKCS#11 backend lives in pkcs11.go.
package hsm

import (
	"context"
	"errors"

	"github.com/vaultd/vaultd/internal/secret"
)

// Sentinel errors. Callers match them with errors.Is; messages never carry
// the PIN or any key material.
var (
	// ErrModule: the PKCS#11 module could not be loaded or initialised.
	ErrModule = errors.New("hsm: cannot load PKCS#11 module")
	// ErrTokenNotFound: no token with the configured label is present.
	ErrTokenNotFound = errors.New("hsm: token not found")
	// ErrWrongPIN: the token rejected the PIN.
	ErrWrongPIN = errors.New("hsm: wrong PIN")
	// ErrPINLocked: the token locked the user PIN after failed attempts.
	ErrPINLocked = errors.New("hsm: PIN locked")
	// ErrKEKNotFound: no KEK with the configured label exists on the token.
	ErrKEKNotFound = errors.New("hsm: KEK not found (run 'vaultctl init')")
	// ErrUnavailable: the HSM did not answer or failed an operation.
	ErrUnavailable = errors.New("hsm: unavailable")
	// ErrUnwrap: a wrapped key failed authentication (tampered, moved to
	// another tenant, or wrapped by another KEK).
	ErrUnwrap = errors.New("hsm: unwrap failed")
	// ErrClosed: the keyring was closed.
	ErrClosed = errors.New("hsm: closed")
)

// Config says how to reach the token and which KEK to use.
type Config struct {
	Module     string        // path of the PKCS#11 module (.so)
	TokenLabel string        // CKA_LABEL of the token
	PIN        secret.String // user PIN
	KEKLabel   string        // CKA_LABEL of the KEK objects; versions are told apart by CKA_ID
	// MaxSessions bounds the session pool (0 = default).
	MaxSessions int
}

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
