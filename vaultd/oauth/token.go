// Package oauth is vaultd's OAuth 2.0 client side: parsing token responses
// (RFC 6749 §5.1), the authorization code grant with PKCE (RFC 6749 §4.1,
// RFC 7636: AuthorizeURL, ParseCallback, CheckIssuer per RFC 9207,
// Exchange), the client credentials grant (§4.4), the refresh grant (§6),
// token revocation (RFC 7009) and scope-drift detection.
//
// Every error this package returns is safe to log: no access token, refresh
// token, client secret, authorization code, PKCE verifier or state and no
// raw provider response body is ever formatted into an error string.
package oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/vaultd/vaultd/internal/secret"
)

// DefaultTokenType is assumed when a token response omits token_type.
const DefaultTokenType = "Bearer"

// MaxExpiresIn bounds expires_in (100 years, in seconds) so that callers can
// turn it into a time.Duration without overflow.
const MaxExpiresIn = 100 * 365 * 24 * 3600

// ErrInvalidTokenResponse means a token response (a store_token body or a
// provider's refresh answer) is not a usable RFC 6749 §5.1 response.
var ErrInvalidTokenResponse = errors.New("oauth: invalid token response")

// Token is a parsed RFC 6749 §5.1 token response.
type Token struct {
	AccessToken  secret.String
	RefreshToken secret.String // zero when the response carried none
	TokenType    string        // "Bearer" when the response omitted it
	ExpiresIn    int64         // seconds; 0 = absent (or literally 0)
	Scope        []string      // nil = absent: the grant's scope is unchanged (§5.1)
	// Fields holds the extra members Endpoint.ResponseFields named that the
	// response carried as JSON strings (ParseTokenResponse only); nil when
	// none. Never secrets: the caller names only non-secret members.
	Fields map[string]string
}

// UnmarshalJSON implements json.Unmarshaler with ParseTokenJSON, so a Token
// can be a field of a larger request body (store_token).
func (t *Token) UnmarshalJSON(data []byte) error {
	tok, err := ParseTokenJSON(data)
	if err != nil {
		return err
	}
	*t = tok
	return nil
}

// ParseTokenJSON parses an RFC 6749 §5.1 token response:
//   - access_token: required non-empty string of VSCHARs (Appendix A.12);
//   - token_type: string, "Bearer" when absent;
//   - expires_in: a non-negative integer, or (as some providers send) a
//     numeric string; absent, null and "" mean absent;
//   - refresh_token: optional string; null and "" mean absent;
//   - scope: a space-delimited string or, leniently, a JSON array of strings;
//     duplicates are dropped, order kept.
//
// Unknown members (id_token, ...) are ignored; member names match exactly;
// duplicate members and trailing data are rejected, so two parsers can never
// disagree about which access_token a body carries. Errors name the member
// but never contain its value.
func ParseTokenJSON(data []byte) (Token, error) {
	return parseToken(data, " ", nil)
}

// MaxResponseFieldBytes bounds one value kept in Token.Fields.
const MaxResponseFieldBytes = 2048

// ParseTokenResponse parses a provider's token endpoint answer as
// ParseTokenJSON does, with two per-provider differences from ep: a scope
// string is split on ep.ScopeSeparator (a JSON array is still accepted),
// and the members named in ep.ResponseFields are kept in Token.Fields when
// present as JSON strings of at most MaxResponseFieldBytes VSCHARs (others
// are left out: the caller decides whether a missing field matters).
// store_token bodies keep going through ParseTokenJSON: they are not a
// provider's answer.
func ParseTokenResponse(data []byte, ep Endpoint) (Token, error) {
	sep, err := scopeSeparator(ep)
	if err != nil {
		return Token{}, err
	}
	if err := checkResponseFields(ep.ResponseFields); err != nil {
		return Token{}, err
	}
	return parseToken(data, sep, ep.ResponseFields)
}

// parseToken is the one token-response parser.
func parseToken(data []byte, sep string, fields []string) (Token, error) {
	members, err := objectMembers(data)
	if err != nil {
		return Token{}, err
	}
	var t Token

	raw, ok := members["access_token"]
	if !ok || isNull(raw) {
		return Token{}, fmt.Errorf("%w: access_token missing", ErrInvalidTokenResponse)
	}
	at, err := tokenString("access_token", raw)
	if err != nil {
		return Token{}, err
	}
	if at == "" {
		return Token{}, fmt.Errorf("%w: access_token empty", ErrInvalidTokenResponse)
	}
	t.AccessToken = secret.NewString(at)

	if raw, ok := members["refresh_token"]; ok && !isNull(raw) {
		rt, err := tokenString("refresh_token", raw)
		if err != nil {
			return Token{}, err
		}
		t.RefreshToken = secret.NewString(rt)
	}

	t.TokenType = DefaultTokenType
	if raw, ok := members["token_type"]; ok && !isNull(raw) {
		tt, err := tokenString("token_type", raw)
		if err != nil {
			return Token{}, err
		}
		if tt != "" {
			t.TokenType = tt
		}
	}

	if raw, ok := members["expires_in"]; ok {
		if t.ExpiresIn, err = parseExpiresIn(raw); err != nil {
			return Token{}, err
		}
	}

	if raw, ok := members["scope"]; ok {
		if t.Scope, err = parseScope(raw, sep); err != nil {
			return Token{}, err
		}
	}

	for _, name := range fields {
		raw, ok := members[name]
		if !ok {
			continue
		}
		v, err := plainString(raw)
		if err != nil || v == "" || len(v) > MaxResponseFieldBytes || !vschars(v) {
			continue
		}
		if t.Fields == nil {
			t.Fields = make(map[string]string, len(fields))
		}
		t.Fields[name] = v
	}
	return t, nil
}

// vschars reports whether s holds only VSCHARs (%x20-7E).
func vschars(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// objectMembers splits a JSON object into its members, rejecting duplicate
// names and trailing data. JSON syntax errors are reported by offset only:
// encoding/json's messages quote input characters.
func objectMembers(data []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	malformed := func() error {
		return fmt.Errorf("%w: malformed JSON near offset %d", ErrInvalidTokenResponse, dec.InputOffset())
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, malformed()
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalidTokenResponse)
	}
	members := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, malformed()
		}
		name, ok := tok.(string)
		if !ok {
			return nil, malformed()
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, malformed()
		}
		if _, dup := members[name]; dup {
			return nil, fmt.Errorf("%w: duplicate member %s", ErrInvalidTokenResponse, safeName(name))
		}
		members[name] = v
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, malformed()
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidTokenResponse)
	}
	return members, nil
}

// safeName quotes a member name for an error only when it is one we know;
// an arbitrary name could itself be a token pasted in the wrong place.
func safeName(name string) string {
	switch name {
	case "access_token", "refresh_token", "token_type", "expires_in", "scope":
		return strconv.Quote(name)
	}
	return "(unrecognised name)"
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// tokenString decodes a JSON string whose characters must all be VSCHAR
// (%x20-7E, RFC 6749 Appendix A): that keeps control characters and
// non-ASCII out of Authorization headers and audit records.
func tokenString(member string, raw json.RawMessage) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", fmt.Errorf("%w: %s is not a string", ErrInvalidTokenResponse, member)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: %s is not a valid string", ErrInvalidTokenResponse, member)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return "", fmt.Errorf("%w: %s contains a character outside %%x20-7E", ErrInvalidTokenResponse, member)
		}
	}
	return s, nil
}

func parseExpiresIn(raw json.RawMessage) (int64, error) {
	if isNull(raw) {
		return 0, nil
	}
	bad := func(why string) (int64, error) {
		return 0, fmt.Errorf("%w: expires_in %s", ErrInvalidTokenResponse, why)
	}
	var num string
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return bad("is not a valid string")
		}
		num = strings.TrimSpace(s)
		if num == "" {
			return 0, nil
		}
	case len(raw) > 0 && (raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')):
		num = string(raw)
	default:
		return bad("is neither a number nor a numeric string")
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		// 3600.0 or 3.6e3: accept integral values only.
		f, ferr := strconv.ParseFloat(num, 64)
		if ferr != nil || math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) || math.Abs(f) > MaxExpiresIn {
			return bad("is not an integer in range")
		}
		n = int64(f)
	}
	if n < 0 {
		return bad("is negative")
	}
	if n > MaxExpiresIn {
		return bad("is out of range")
	}
	return n, nil
}

// parseScope reads a scope member; sep is " " (RFC 6749 §3.3) or the
// provider's own delimiter (Slack's ","), applied to string forms only.
func parseScope(raw json.RawMessage, sep string) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var parts []string
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("%w: scope is not a valid string", ErrInvalidTokenResponse)
		}
		parts = []string{s}
	case len(raw) > 0 && raw[0] == '[':
		var arr []json.RawMessage
		if err := json.Unmarshal(raw, &arr); err != nil {
			return nil, fmt.Errorf("%w: scope is not a valid array", ErrInvalidTokenResponse)
		}
		for _, el := range arr {
			var s string
			if len(el) == 0 || el[0] != '"' || json.Unmarshal(el, &s) != nil {
				return nil, fmt.Errorf("%w: scope array holds a non-string", ErrInvalidTokenResponse)
			}
			parts = append(parts, s)
		}
	default:
		return nil, fmt.Errorf("%w: scope is neither a string nor an array", ErrInvalidTokenResponse)
	}
	var out []string
	seen := make(map[string]bool)
	for _, p := range parts {
		// RFC 6749 §3.3 delimits with spaces; Fields also tolerates tabs,
		// which the charset check below would reject anyway. A provider
		// delimiter is split first, then spaces around its pieces dropped.
		pieces := []string{p}
		if sep != " " {
			pieces = strings.Split(p, sep)
		}
		var words []string
		for _, piece := range pieces {
			words = append(words, strings.Fields(piece)...)
		}
		for _, s := range words {
			if !validScopeToken(s) {
				return nil, fmt.Errorf("%w: scope contains a character outside NQCHAR", ErrInvalidTokenResponse)
			}
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out, nil // nil when the scope was empty: treated as absent
}

// validScopeToken checks RFC 6749 §3.3: scope-token = 1*NQCHAR,
// NQCHAR = %x21 / %x23-5B / %x5D-7E.
func validScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
