package oauth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/vaultd/vaultd/internal/secret"
)

// The front-channel half of the authorization code grant (RFC 6749 §4.1):
// PKCE (RFC 7636), the state, the authorization request URL, the callback
// parser and the RFC 9207 issuer check. Exchange (client.go) is the back
// channel.

var (
	// ErrInvalidAuthorizeRequest means AuthorizeURL was given an unusable
	// request (URL, missing member, a parameter that would be ambiguous).
	ErrInvalidAuthorizeRequest = errors.New("oauth: invalid authorization request")
	// ErrInvalidCallback means a redirect to the callback is malformed or
	// hostile. Its text names the parameter and the rule, never a value.
	ErrInvalidCallback = errors.New("oauth: invalid authorization callback")
	// ErrIssuerMismatch means the callback's iss (RFC 9207) is not the
	// expected issuer, or is missing where it is required.
	ErrIssuerMismatch = errors.New("oauth: authorization response issuer mismatch")
)

// randomBytes is the entropy of a PKCE verifier and of a state: 256 bits,
// 43 base64url characters.
const randomBytes = 32

func randomToken() (string, error) {
	b := make([]byte, randomBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("oauth: reading randomness: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// NewPKCE returns a fresh RFC 7636 code verifier (32 random bytes,
// base64url without padding: 43 characters of the §4.1 unreserved set) and
// its S256 code challenge. The verifier stays with the connect session
// until Exchange; only the challenge goes to the browser.
func NewPKCE() (verifier secret.String, challenge string, err error) {
	v, err := randomToken()
	if err != nil {
		return secret.String{}, "", err
	}
	return secret.NewString(v), s256Challenge(v), nil
}

// s256Challenge is RFC 7636 §4.2: BASE64URL(SHA256(ASCII(verifier))).
func s256Challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// NewState returns a fresh state value (32 random bytes, base64url without
// padding): unguessable (256 bits), so a forged callback cannot name a
// live connect session (RFC 6749 §10.12).
func NewState() (secret.String, error) {
	v, err := randomToken()
	if err != nil {
		return secret.String{}, err
	}
	return secret.NewString(v), nil
}

// AuthorizeRequest is one authorization request (RFC 6749 §4.1.1).
type AuthorizeRequest struct {
	AuthorizationURL string
	ClientID         string
	RedirectURI      string
	Scopes           []string
	ScopeSeparator   string // "" = " "; "," for Slack
	State            secret.String
	CodeChallenge    string // S256 challenge (NewPKCE); "" sends no PKCE parameters
	// Extra are further query parameters (access_type=offline, prompt, ...),
	// added in name order. They may not name a protocol parameter above.
	Extra map[string]string
}

// protocolParams are the parameters AuthorizeURL owns; neither Extra nor the
// authorization URL's own query may carry them, so there is never a second
// redirect_uri or state for a provider to pick instead of ours.
var protocolParams = []string{"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"}

// AuthorizeURL builds the URL the user's browser is sent to: the
// authorization endpoint's own query kept, then response_type=code,
// client_id, redirect_uri, scope (when any), state, code_challenge and
// code_challenge_method=S256 (when CodeChallenge is set), then Extra in name
// order.
//
// It refuses an authorization URL that is not absolute https (http only for
// the loopback hosts 127.0.0.1, ::1 and localhost, for development), that
// has user info or a fragment, or whose query already holds a protocol
// parameter; an empty ClientID, RedirectURI or State; a scope that is not a
// scope token or holds the separator; an Extra parameter that is a protocol
// parameter or repeats one of the URL's query. The returned URL contains the
// state: it is meant for a Location header only, never a log.
func AuthorizeURL(r AuthorizeRequest) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: %s", ErrInvalidAuthorizeRequest, why)
	}
	if strings.Contains(r.AuthorizationURL, "#") {
		return bad("authorization URL has a fragment")
	}
	u, err := url.Parse(r.AuthorizationURL)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return bad("authorization URL must be an absolute URL")
	}
	if u.User != nil {
		return bad("authorization URL has user info")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !loopbackHost(u.Hostname()) {
			return bad("authorization URL must be https (http only for a loopback host)")
		}
	default:
		return bad("authorization URL must be https (http only for a loopback host)")
	}
	existing, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("authorization URL has a malformed query")
	}
	for _, p := range protocolParams {
		if existing.Has(p) {
			return bad("authorization URL's query holds the protocol parameter " + p)
		}
	}
	if r.ClientID == "" {
		return bad("client_id is empty")
	}
	if r.RedirectURI == "" {
		return bad("redirect_uri is empty")
	}
	if r.State.IsZero() {
		return bad("state is empty")
	}
	var scope string
	switch r.ScopeSeparator {
	case "", " ", ",":
		scope, err = joinScopes(Endpoint{ScopeSeparator: r.ScopeSeparator}, r.Scopes)
		if err != nil {
			return bad("a scope is not a scope token")
		}
	default:
		return bad(`scope separator must be " " or ","`)
	}

	var q strings.Builder
	q.WriteString(u.RawQuery)
	add := func(name, value string) {
		if q.Len() > 0 {
			q.WriteByte('&')
		}
		q.WriteString(url.QueryEscape(name))
		q.WriteByte('=')
		q.WriteString(url.QueryEscape(value))
	}
	add("response_type", "code")
	add("client_id", r.ClientID)
	add("redirect_uri", r.RedirectURI)
	if scope != "" {
		add("scope", scope)
	}
	add("state", r.State.Reveal())
	if r.CodeChallenge != "" {
		add("code_challenge", r.CodeChallenge)
		add("code_challenge_method", "S256")
	}
	for _, name := range slices.Sorted(maps.Keys(r.Extra)) {
		if name == "" {
			return bad("an extra parameter has no name")
		}
		if slices.Contains(protocolParams, name) {
			return bad("extra parameter " + name + " would override a protocol parameter")
		}
		if existing.Has(name) {
			return bad("extra parameter " + name + " repeats one of the authorization URL's query")
		}
		add(name, r.Extra[name])
	}
	u.RawQuery = q.String()
	u.ForceQuery = false
	return u.String(), nil
}

// loopbackHost is the development exception to https: a browser and a
// provider stand-in on the same machine.
func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && (ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback))
}

// Callback is a parsed redirect to the callback (RFC 6749 §4.1.2, §4.1.2.1,
// RFC 9207). Exactly one of Code and Error is set; State always is.
type Callback struct {
	Code, State      secret.String
	Error            string // RFC 6749 §4.1.2.1 error code, e.g. "access_denied"
	ErrorDescription string // untrusted provider text; "" when absent or refused
	ErrorURI         string // untrusted; "" when absent or refused
	Iss              string // RFC 9207 issuer identifier; "" when absent
}

// Bounds of ParseCallback.
const (
	MaxCallbackQueryBytes     = 8 << 10
	maxCallbackState          = 512
	maxCallbackCode           = 4096
	maxCallbackError          = 256
	maxCallbackErrDescription = 1024
	maxCallbackErrURI         = 2048
	maxCallbackIss            = 2048
)

var callbackParams = []string{"code", "state", "error", "error_description", "error_uri", "iss"}

// ParseCallback parses the query of a redirect to the callback. It is
// strict, since anyone can send a browser there with anything:
//   - rawQuery at most MaxCallbackQueryBytes; every escape valid;
//   - each known parameter (code, state, error, error_description,
//     error_uri, iss) at most once; unknown parameters ignored;
//   - state required: 1..512 bytes of the RFC 3986 unreserved set (what
//     NewState produces);
//   - exactly one of code (1..4096 VSCHARs, %x20-7E) and error (1..256
//     bytes of %x20-21 / %x23-5B / %x5D-7E, RFC 6749 §4.1.2.1);
//   - error_description (at most 1024 bytes, the error charset) and
//     error_uri (at most 2048 bytes, %x21 / %x23-5B / %x5D-7E) are kept only
//     when they pass, dropped otherwise: they are decoration;
//   - iss at most 2048 bytes of %x21-7E.
//
// Errors wrap ErrInvalidCallback and name the parameter and rule, never a
// value.
func ParseCallback(rawQuery string) (Callback, error) {
	bad := func(why string) (Callback, error) {
		return Callback{}, fmt.Errorf("%w: %s", ErrInvalidCallback, why)
	}
	if len(rawQuery) > MaxCallbackQueryBytes {
		return bad("query too long")
	}
	got := make(map[string]string, len(callbackParams))
	for pair := range strings.SplitSeq(rawQuery, "&") {
		if pair == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return bad("malformed escape in a parameter name")
		}
		if !slices.Contains(callbackParams, name) {
			continue
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return bad("malformed escape in " + name)
		}
		if _, dup := got[name]; dup {
			return bad("duplicate parameter " + name)
		}
		got[name] = value
	}

	var cb Callback
	state, ok := got["state"]
	if !ok {
		return bad("state missing")
	}
	if state == "" || len(state) > maxCallbackState || !allBytes(state, isUnreserved) {
		return bad("state is not 1-512 unreserved characters")
	}
	cb.State = secret.NewString(state)

	code, hasCode := got["code"]
	errCode, hasErr := got["error"]
	switch {
	case hasCode && hasErr:
		return bad("both code and error present")
	case !hasCode && !hasErr:
		return bad("neither code nor error present")
	case hasCode:
		if code == "" || len(code) > maxCallbackCode || !allBytes(code, isVSChar) {
			return bad("code is not 1-4096 characters of %x20-7E")
		}
		cb.Code = secret.NewString(code)
	default:
		if errCode == "" || len(errCode) > maxCallbackError || !allBytes(errCode, isErrorChar) {
			return bad("error is not 1-256 characters of the RFC 6749 error set")
		}
		cb.Error = errCode
	}

	if d, ok := got["error_description"]; ok && len(d) <= maxCallbackErrDescription && allBytes(d, isErrorChar) {
		cb.ErrorDescription = d
	}
	if d, ok := got["error_uri"]; ok && len(d) <= maxCallbackErrURI && allBytes(d, isURIChar) {
		cb.ErrorURI = d
	}
	if iss, ok := got["iss"]; ok {
		if iss == "" || len(iss) > maxCallbackIss || !allBytes(iss, isURIChar) {
			return bad("iss is not 1-2048 characters of %x21-7E")
		}
		cb.Iss = iss
	}
	return cb, nil
}

func allBytes(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

// isUnreserved is RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
func isUnreserved(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// isVSChar is RFC 6749 Appendix A's VSCHAR, %x20-7E.
func isVSChar(c byte) bool { return c >= 0x20 && c <= 0x7e }

// isErrorChar is RFC 6749 §4.1.2.1's error charset, %x20-21 / %x23-5B / %x5D-7E.
func isErrorChar(c byte) bool { return isVSChar(c) && c != '"' && c != '\\' }

// isURIChar is error_uri's charset, %x21 / %x23-5B / %x5D-7E; iss shares
// it but for '"' and '\', which no issuer URL holds either.
func isURIChar(c byte) bool { return isErrorChar(c) && c != ' ' }

// CheckIssuer is the RFC 9207 mix-up defence: when the provider sent iss,
// it must equal expected exactly (simple string comparison, §2.4); when
// required (the provider is known to send iss, RFC 9207 §3), an absent iss
// is refused too.
//
// With expected "" (no issuer configured for the provider) iss is ignored:
// most OAuth 2.0 providers publish no issuer identifier, so there is nothing
// to compare it with, and accepting or refusing an unverifiable value would
// prove nothing either way; a refusal would only break providers that send
// it regardless. required with expected "" is a configuration error and is
// refused. Errors never contain iss: it is attacker-controlled.
func CheckIssuer(cb Callback, expected string, required bool) error {
	if expected == "" {
		if required {
			return fmt.Errorf("%w: an issuer is required but none is configured", ErrIssuerMismatch)
		}
		return nil
	}
	if cb.Iss == "" {
		if required {
			return fmt.Errorf("%w: iss missing", ErrIssuerMismatch)
		}
		return nil
	}
	if cb.Iss != expected {
		return fmt.Errorf("%w: iss is not the expected issuer", ErrIssuerMismatch)
	}
	return nil
}
