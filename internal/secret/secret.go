// Package secret holds types for secret material (tokens, PINs, client
// secrets, key bytes) whose every textual form is redacted. Redaction is a
// property of the type, so a secret that reaches fmt, slog, json or a panic
// message prints as [REDACTED] rather than relying on call-site discipline.
package secret

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
)

// Redacted is what every secret prints as.
const Redacted = "[REDACTED]"

// String is a secret string (an OAuth token, a PIN, a client secret).
// The zero value is the empty secret.
type String struct {
	v string
}

// NewString wraps s.
func NewString(s string) String { return String{v: s} }

// Reveal returns the plaintext. Call it only where the secret is used
// (an outbound Authorization header, an HSM login, a seal), never to print.
func (s String) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s String) IsZero() bool { return s.v == "" }

// Len is the length of the secret in bytes (safe to log).
func (s String) Len() int { return len(s.v) }

// Equal compares in constant time.
func (s String) Equal(o String) bool {
	return subtle.ConstantTimeCompare([]byte(s.v), []byte(o.v)) == 1
}

func (String) String() string                { return Redacted }
func (String) GoString() string              { return Redacted }
func (String) LogValue() slog.Value          { return slog.StringValue(Redacted) }
func (String) MarshalText() ([]byte, error)  { return []byte(Redacted), nil }
func (String) MarshalJSON() ([]byte, error)  { return []byte(`"` + Redacted + `"`), nil }
func (String) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(Redacted)) }

// Bytes is secret binary material (a plaintext DEK, a decrypted token in
// flight). Wipe zeroes it when it is no longer needed.
type Bytes struct {
	b []byte
}

// NewBytes wraps b without copying; the caller hands over ownership.
func NewBytes(b []byte) Bytes { return Bytes{b: b} }

// Reveal returns the underlying slice (not a copy).
func (s Bytes) Reveal() []byte { return s.b }

// Len is the length in bytes (safe to log).
func (s Bytes) Len() int { return len(s.b) }

// Wipe zeroes the bytes in place.
func (s Bytes) Wipe() { Zero(s.b) }

func (Bytes) String() string                { return Redacted }
func (Bytes) GoString() string              { return Redacted }
func (Bytes) LogValue() slog.Value          { return slog.StringValue(Redacted) }
func (Bytes) MarshalText() ([]byte, error)  { return []byte(Redacted), nil }
func (Bytes) MarshalJSON() ([]byte, error)  { return []byte(`"` + Redacted + `"`), nil }
func (Bytes) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(Redacted)) }

// Zero overwrites b with zeros. clear() is not elided by the compiler for
// heap slices, which is all we pass here.
func Zero(b []byte) {
	clear(b)
}
