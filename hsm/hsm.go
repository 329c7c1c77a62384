// Package hsm keeps the key-encryption key (KEK) inside a PKCS#11 token and
// wraps/unwraps data keys with it. The rest of vaultd sees only the small
// Keyring interface; the PKCS#11 backend lives in pkcs11.go. What only some
// backends can do (rotate, reload and list KEK versions) is a set of
// one-method optional interfaces (KEKRotator, Reloader, KEKInspector) that
// callers find by type assertion.
//
// The backend (PKCS11, from Open) uses crypto11 only to load the module,
// find the token, log in and generate KEKs; wrap and unwrap are raw
// C_Encrypt/C_Decrypt with CKM_AES_GCM (random 12-byte IV, 128-bit tag, AAD)
// through miekg/pkcs11 in a pool of read-only sessions, so every HSM failure
// is an error, never a panic. KEK versions are AES-256 token objects sharing
// one CKA_LABEL, told apart by CKA_ID (version, 4 bytes big-endian); the
// highest is current, older ones stay for Unwrap. InitKEK creates version 1
// ('vaultctl init'); Open refuses to start without a KEK or with one that is
// extractable or not sensitive. hsm/hsmtest has a software fake and the
// suite every Keyring passes.
package hsm

import (
	"context"

	"github.com/vaultd/vaultd/internal/secret"
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
