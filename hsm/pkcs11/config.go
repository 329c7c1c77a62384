package pkcs11

import (
	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/secret"
)

// Config says how to reach the token and which KEK to use.
type Config struct {
	Module     string        // path of the PKCS#11 module (.so)
	TokenLabel string        // CKA_LABEL of the token
	PIN        secret.String // user PIN
	KEKLabel   string        // CKA_LABEL of the KEK objects; versions are told apart by CKA_ID
	// MaxSessions bounds the session pool (0 = DefaultMaxSessions).
	MaxSessions int
	// ForceScheme, when set, is the wrapping scheme to use instead of the
	// strongest the token offers (hsm.Scheme's order); a token that does
	// not offer it fails Open with hsm.ErrMechanism. Tests use it to run
	// every scheme on SoftHSMv2.
	ForceScheme hsm.Scheme
}

// DefaultMaxSessions bounds the wrap/unwrap session pool when
// Config.MaxSessions is 0. Wraps are short; a handful of sessions keeps the
// HSM busy without exhausting a shared partition's session limit.
const DefaultMaxSessions = 16

// ErrNoCgo is what Open and InitKEK return in a build without cgo. It
// matches hsm.ErrModule: the module cannot be loaded, and no restart will
// change that.
var ErrNoCgo error = &hsm.Error{
	Msg:  "vaultd was built without cgo; the PKCS#11 backend needs it",
	Kind: hsm.ErrModule,
}
