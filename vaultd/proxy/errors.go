package proxy

import (
	"errors"
	"fmt"
)

// Sentinel errors, matched with errors.Is. Messages are safe to show to a
// caller: they never carry a token, a header value or the refused input.
var (
	// ErrEgressDenied: the requested target leaves the provider's API.
	ErrEgressDenied = errors.New("proxy: egress denied")
	// ErrInvalidBase: the provider's api_base_url is unusable (a
	// configuration error, not the caller's fault).
	ErrInvalidBase = errors.New("proxy: invalid api_base_url")
	// ErrUpstreamTimeout: the upstream did not answer in time.
	ErrUpstreamTimeout = errors.New("proxy: upstream timeout")
	// ErrUpstreamUnreachable: dial, TLS, reset or protocol failure.
	ErrUpstreamUnreachable = errors.New("proxy: upstream unreachable")
	// ErrUpstreamResponse: the upstream answered in a form the vault cannot
	// check for the token (an unknown content coding). It is a kind of
	// ErrUpstreamUnreachable so servers map it to 502.
	ErrUpstreamResponse = fmt.Errorf("%w: unverifiable response", ErrUpstreamUnreachable)
	// ErrBadRequest: the caller's request is malformed.
	ErrBadRequest = errors.New("proxy: bad request")
	// ErrTooLarge: the caller's request exceeds the size limit.
	ErrTooLarge = errors.New("proxy: payload too large")
	// ErrRequestBody: reading the caller's request body failed while it was
	// streamed upstream; the cause is wrapped (e.g. *http.MaxBytesError).
	ErrRequestBody = errors.New("proxy: reading request body")
	// ErrNoToken: Do was called without an access token.
	ErrNoToken = errors.New("proxy: no access token")
)

// reasonError is a sentinel plus a short, fixed, caller-safe reason.
type reasonError struct {
	kind   error
	reason string
}

func (e *reasonError) Error() string { return e.kind.Error() + ": " + e.reason }
func (e *reasonError) Unwrap() error { return e.kind }

func deny(reason string) error    { return &reasonError{kind: ErrEgressDenied, reason: reason} }
func badReq(reason string) error  { return &reasonError{kind: ErrBadRequest, reason: reason} }
func badBase(reason string) error { return &reasonError{kind: ErrInvalidBase, reason: reason} }

// SafeReason returns the short reason carried by an error of this package
// (e.g. "dot segment", "unknown field"), suitable for an error message to
// the caller; for any other error it returns a generic text.
func SafeReason(err error) string {
	var re *reasonError
	if errors.As(err, &re) {
		return re.reason
	}
	var ue *UpstreamError
	if errors.As(err, &ue) {
		return ue.Reason
	}
	return "invalid request"
}

// UpstreamError describes a failed upstream exchange without its raw cause
// (which may name the full URL, query included). Kind is ErrUpstreamTimeout,
// ErrUpstreamUnreachable or ErrUpstreamResponse.
type UpstreamError struct {
	Kind   error
	Host   string // host:port from api_base_url (configuration, safe)
	Reason string // short category: "dial", "tls", "reset", "timeout", ...
}

func (e *UpstreamError) Error() string {
	return e.Kind.Error() + " (" + e.Reason + ", host " + e.Host + ")"
}
func (e *UpstreamError) Unwrap() error { return e.Kind }
