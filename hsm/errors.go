package hsm

import "errors"

// Sentinel errors. Callers match them with errors.Is; messages never carry
// the PIN or any key material. Every backend reports its failures with these.
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
	// ErrKEKInvalid: an object carrying the KEK label breaks the KEK policy
	// (extractable, not sensitive, not private, not AES-256, unusable for
	// encrypt/decrypt, malformed or duplicate CKA_ID). vaultd refuses to use
	// or add to such a key set rather than guess.
	ErrKEKInvalid = errors.New("hsm: KEK object violates policy")
	// ErrAuditKeyNotFound: the audit signing key ("<kek_label>-audit") is
	// not on the token, or only one half of it is.
	ErrAuditKeyNotFound = errors.New("hsm: audit signing key not found (run 'vaultctl init')")
	// ErrAuditKeyInvalid: an object carrying the audit key label breaks
	// its policy (extractable, not sensitive, not EC P-256, duplicate).
	ErrAuditKeyInvalid = errors.New("hsm: audit signing key violates policy")
	// ErrTenantKeyNotFound: the tenant has no wrapping key in the HSM
	// (never created, or destroyed to crypto-shred the tenant).
	ErrTenantKeyNotFound = errors.New("hsm: tenant key not found")
	// ErrMechanism: the token offers no wrapping scheme vaultd can use
	// (hsm.Scheme), or its wrap/unwrap self-test failed. Like a missing
	// KEK, only an operator can fix it (another token or HSM firmware).
	ErrMechanism = errors.New("hsm: token lacks a usable wrapping mechanism")
)

// Error is an hsm error: a short message, the sentinel it matches with
// errors.Is, and the underlying cause (a pkcs11.Error, a context error, ...).
type Error struct {
	Msg   string
	Kind  error // one of the package's sentinels
	Cause error // may be nil
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Msg + ": " + e.Cause.Error()
	}
	return e.Msg
}

// Unwrap exposes both the sentinel and the cause to errors.Is/As.
func (e *Error) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Kind, e.Cause}
	}
	return []error{e.Kind}
}
