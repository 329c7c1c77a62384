package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/vaultd/vaultd/internal/secret"
)

var (
	// ErrNoRevocationEndpoint is returned by Revoke when the provider has no
	// RFC 7009 endpoint configured.
	ErrNoRevocationEndpoint = errors.New("oauth: provider has no revocation endpoint")
	// ErrInvalidEndpoint means the Endpoint configuration is unusable.
	ErrInvalidEndpoint = errors.New("oauth: invalid endpoint configuration")
	// ErrEmptyToken is returned when asked to refresh or revoke an empty token.
	ErrEmptyToken = errors.New("oauth: empty token")
	// ErrResponseTooLarge means the provider's answer exceeded MaxResponseBytes.
	ErrResponseTooLarge = errors.New("oauth: provider response too large")
	// ErrRedirect means the endpoint answered with a redirect, which is never
	// followed: it would re-send credentials to wherever it points.
	ErrRedirect = errors.New("oauth: endpoint answered with a redirect (not followed)")
)

// Error is an error answer from a token or revocation endpoint
// (RFC 6749 §5.2, RFC 7009 §2.2.1), or an unexpected HTTP status.
//
// Code and Description come from the provider and are sanitised: restricted
// to the §5.2 character set, bounded in length, and scrubbed of the secrets
// vaultd sent in the request (a provider may echo them). Description is still
// untrusted text: log it, do not hand it to API callers. Error() reports only
// the operation, the HTTP status and the code.
type Error struct {
	Op          string // "refresh", "exchange", "client_credentials" or "revoke"
	HTTPStatus  int
	Code        string // e.g. "invalid_grant"; "" when the body carried none
	Description string
}

func (e *Error) Error() string {
	code := e.Code
	if code == "" {
		code = "no OAuth error code"
	}
	return fmt.Sprintf("oauth: %s: provider answered HTTP %d (%s)", e.Op, e.HTTPStatus, code)
}

// IsInvalidGrant reports whether err is the provider rejecting the grant
// (RFC 6749 §5.2 invalid_grant): the refresh token is expired, revoked or
// otherwise dead, and only a new authorization will help.
func IsInvalidGrant(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == "invalid_grant"
}

// IsInvalidClient reports whether err is the provider rejecting this
// vault's client authentication (RFC 6749 §5.2 invalid_client): a wrong or
// revoked client secret, or the wrong auth style. Only an operator fixing
// the provider's configuration will help.
func IsInvalidClient(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == "invalid_client"
}

// IsTransient reports whether err is worth retrying later: no answer at all
// (network errors, timeouts, a connection cut mid-response), HTTP 5xx, 408
// or 429, or the codes temporarily_unavailable, server_error and slow_down.
// An answer carrying invalid_grant is never transient, whatever its status.
// Caller cancellation (context.Canceled) is not transient: the provider did
// nothing wrong.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		switch e.Code {
		case "invalid_grant", "invalid_client", "unauthorized_client", "invalid_request", "unsupported_grant_type", "invalid_scope":
			return false
		case "temporarily_unavailable", "server_error", "slow_down":
			return true
		}
		return e.HTTPStatus >= 500 || e.HTTPStatus == 408 || e.HTTPStatus == 429
	}
	var te *transportError
	if errors.As(err, &te) {
		return !errors.Is(err, context.Canceled)
	}
	return false
}

// transportError is a failure to obtain a complete answer. Its message is
// scrubbed of the secrets sent in the request: some net/http errors quote
// bytes the server sent (a malformed status line, say).
type transportError struct {
	op  string
	msg string
	err error
}

func (e *transportError) Error() string { return "oauth: " + e.op + ": " + e.msg }
func (e *transportError) Unwrap() error { return e.err }

// scrubber removes known secrets (and their form-encoded spellings) from
// provider-controlled or library-produced text before it enters an error.
type scrubber []string

func newScrubber(secrets ...secret.String) scrubber {
	var s scrubber
	for _, v := range secrets {
		if v.IsZero() {
			continue
		}
		s = append(s, v.Reveal())
		if q := url.QueryEscape(v.Reveal()); q != v.Reveal() {
			s = append(s, q)
		}
		if q := url.PathEscape(v.Reveal()); q != v.Reveal() {
			s = append(s, q)
		}
		// The form sanitizeDescription leaves of it: a secret holding '"',
		// '\\' or control bytes would otherwise slip through the scrub after
		// those bytes were dropped from the text.
		if q := keepDescriptionChars(v.Reveal()); q != v.Reveal() && q != "" {
			s = append(s, q)
		}
	}
	return s
}

// keepDescriptionChars drops the bytes outside RFC 6749 §5.2's
// error_description set (%x20-21 / %x23-5B / %x5D-7E).
func keepDescriptionChars(d string) string {
	var b strings.Builder
	for i := 0; i < len(d); i++ {
		if c := d[i]; c >= 0x20 && c <= 0x7e && c != '"' && c != '\\' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func (s scrubber) scrub(text string) string {
	for _, v := range s {
		text = strings.ReplaceAll(text, v, secret.Redacted)
	}
	return text
}

func (s scrubber) contains(text string) bool {
	for _, v := range s {
		if strings.Contains(text, v) {
			return true
		}
	}
	return false
}

const (
	maxCodeLen        = 64
	maxDescriptionLen = 256
)

// sanitizeCode keeps an error code only if it is a plausible RFC 6749 §5.2
// code (a short run of %x20-21 / %x23-5B / %x5D-7E) that carries none of the
// secrets we sent; anything else becomes "".
func (s scrubber) sanitizeCode(code string) string {
	if code == "" || len(code) > maxCodeLen || s.contains(code) {
		return ""
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return ""
		}
	}
	return code
}

// sanitizeDescription drops characters outside the §5.2 set, then scrubs
// secrets, then truncates. Dropping first means a secret split by a control
// character is reassembled and caught; scrubbing before truncating means a
// cut cannot leave a secret's prefix behind.
func (s scrubber) sanitizeDescription(d string) string {
	out := s.scrub(keepDescriptionChars(d))
	if len(out) > maxDescriptionLen {
		out = out[:maxDescriptionLen]
	}
	return out
}
