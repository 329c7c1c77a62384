package oauth

// Why a small hand-written client and not golang.org/x/oauth2:
//   - x/oauth2 has no RFC 7009 revocation, so client authentication, size
//     limits and error-body parsing would have to be written here anyway;
//   - its RetrieveError.Error() prints the raw response body, which a
//     provider may use to echo the refresh token we sent;
//   - its TokenSource silently substitutes the old refresh token when the
//     answer omits one and turns expires_in into a wall-clock Expiry, hiding
//     exactly the facts the vault records (rotation, expires_in as sent);
//   - store_token bodies and every grant's answer must go through one parser
//     (ParseTokenJSON and ParseTokenResponse share it), not two with
//     different leniencies.
// What remains is one form POST with two client-auth styles, shared by the
// refresh, authorization code and client credentials grants: small enough to
// own, with full control over what reaches an error string.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
)

// Client authentication styles at the token and revocation endpoints.
const (
	AuthStyleBasic = "basic" // HTTP Basic, RFC 6749 §2.3.1
	AuthStyleBody  = "body"  // client_id and client_secret in the form body
)

// ParseAuthStyle reads an auth style as written in a config file; "" (not
// set) is the default, AuthStyleBasic. A refusal's message is the bare
// reason, for the caller to prefix with where the value came from; it
// matches ErrInvalidEndpoint.
func ParseAuthStyle(s string) (string, error) {
	switch s {
	case "", AuthStyleBasic:
		return AuthStyleBasic, nil
	case AuthStyleBody:
		return AuthStyleBody, nil
	}
	return "", &authStyleError{fmt.Sprintf("not allowed (want %q or %q)", AuthStyleBasic, AuthStyleBody)}
}

// authStyleError is a refused auth style; its text is only the reason.
type authStyleError struct{ reason string }

func (e *authStyleError) Error() string { return e.reason }
func (e *authStyleError) Unwrap() error { return ErrInvalidEndpoint }

// DefaultTimeout bounds one call when Endpoint.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// MaxResponseBytes bounds what is read from a token or revocation endpoint.
// Token responses are small; generous room is left for JWT access tokens.
const MaxResponseBytes = 256 << 10

// Endpoint is one provider's token (and optional revocation) endpoint with
// this vault's client credentials.
type Endpoint struct {
	TokenURL      string
	RevocationURL string // RFC 7009; "" = the provider offers none
	ClientID      string
	ClientSecret  secret.String
	AuthStyle     string        // AuthStyleBasic (also when "") or AuthStyleBody
	Timeout       time.Duration // per call; DefaultTimeout when zero
	// HTTPClient carries the transport (TLS roots, proxy). Nil means
	// http.DefaultClient's transport. Its redirect policy is overridden:
	// redirects are never followed.
	HTTPClient *http.Client
	// ScopeSeparator joins requested scopes and splits a response's scope ("" = " "; Slack uses ",").
	ScopeSeparator string
	// ResponseFields names extra top-level string members of a token response to keep in
	// Token.Fields (for example "instance_url"); never secrets. Each value at most 2048 bytes.
	ResponseFields []string
}

// scopeSeparator is ep's delimiter of scope lists: " " (RFC 6749 §3.3, also
// for "") or ",". Nothing else: a delimiter that is itself an NQCHAR other
// than "," would make scope tokens ambiguous for no known provider.
func scopeSeparator(ep Endpoint) (string, error) {
	switch ep.ScopeSeparator {
	case "", " ":
		return " ", nil
	case ",":
		return ",", nil
	}
	return "", fmt.Errorf("%w: scope separator must be \" \" or \",\"", ErrInvalidEndpoint)
}

// checkResponseFields refuses names that would copy a credential or a
// member the parser already owns into Token.Fields, where it would be
// treated as plain data.
func checkResponseFields(names []string) error {
	for _, n := range names {
		switch n {
		case "", "access_token", "refresh_token", "id_token", "token_type", "expires_in", "scope":
			return fmt.Errorf("%w: response field %q may not be kept as a plain field", ErrInvalidEndpoint, n)
		}
	}
	return nil
}

// joinScopes joins requested scopes with ep's separator, refusing a scope
// that is not a scope token (RFC 6749 §3.3): one holding a space or the
// separator would silently turn into two.
func joinScopes(ep Endpoint, scopes []string) (string, error) {
	sep, err := scopeSeparator(ep)
	if err != nil {
		return "", err
	}
	for _, sc := range scopes {
		if !validScopeToken(sc) || strings.Contains(sc, sep) {
			return "", fmt.Errorf("%w: a requested scope is not a scope token", ErrInvalidEndpoint)
		}
	}
	return strings.Join(scopes, sep), nil
}

// Refresh performs the RFC 6749 §6 refresh_token grant. scopes, when
// non-empty, asks for a narrower scope (§6 "scope" parameter), joined with
// ep.ScopeSeparator; the answer is read with ParseTokenResponse.
//
// The returned Token is the provider's answer as sent: in particular, when
// the provider does not rotate and omits refresh_token, Token.RefreshToken
// is ZERO. The CALLER must then keep using the refresh token it already
// holds; it must never store the zero value over it. Likewise a zero
// ExpiresIn means the answer carried no expiry and a nil Scope means the
// grant's scope is unchanged (RFC 6749 §5.1).
//
// Errors: *Error for an OAuth error answer (IsInvalidGrant, IsTransient
// classify it), ErrRedirect, ErrResponseTooLarge, ErrInvalidTokenResponse,
// ErrInvalidEndpoint, ErrEmptyToken, or a transport failure (IsTransient).
// No error string contains a token, the client secret or the response body.
func Refresh(ctx context.Context, ep Endpoint, refreshToken secret.String, scopes []string) (Token, error) {
	const op = "refresh"
	if refreshToken.IsZero() {
		return Token{}, fmt.Errorf("oauth: %s: %w", op, ErrEmptyToken)
	}
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refreshToken.Reveal()},
	}
	if len(scopes) > 0 {
		sc, err := joinScopes(ep, scopes)
		if err != nil {
			return Token{}, fmt.Errorf("oauth: %s: %w", op, err)
		}
		form.Set("scope", sc)
	}
	return tokenGrant(ctx, op, ep, form, refreshToken)
}

// Exchange performs the RFC 6749 §4.1.3 access token request of the
// authorization code grant: code from the callback, redirectURI exactly as
// sent in the authorization request, and the PKCE verifier (RFC 7636 §4.5)
// when verifier is non-zero. Client authentication is as for Refresh.
//
// The Token is the provider's answer as sent (RefreshToken zero when it
// issued none). Errors are classified as for Refresh: an *Error carries the
// provider's code (invalid_grant for a used, expired or foreign code or a
// wrong verifier), including a 2xx answer that is an error object, such
// as Slack's {"ok":false,"error":"invalid_code"}. Neither the code nor the
// verifier ever reaches an error string.
func Exchange(ctx context.Context, ep Endpoint, code secret.String, redirectURI string, verifier secret.String) (Token, error) {
	const op = "exchange"
	if code.IsZero() {
		return Token{}, fmt.Errorf("oauth: %s: %w: authorization code", op, ErrEmptyToken)
	}
	if redirectURI == "" {
		return Token{}, fmt.Errorf("oauth: %s: %w: redirect_uri is empty", op, ErrInvalidEndpoint)
	}
	form := url.Values{
		"grant_type":   {"authorization_code"},
		"code":         {code.Reveal()},
		"redirect_uri": {redirectURI},
	}
	if !verifier.IsZero() {
		form.Set("code_verifier", verifier.Reveal())
	}
	return tokenGrant(ctx, op, ep, form, code, verifier)
}

// ClientCredentials performs the RFC 6749 §4.4 client credentials grant,
// asking for scopes (joined with ep.ScopeSeparator) when non-empty.
//
// A refresh_token in the answer is dropped: §4.4.3 says none should be
// issued, and a client-credentials integration obtains a new access token
// with its credentials instead of holding a second secret. Errors are
// classified as for Refresh; IsInvalidClient tells rejected credentials.
func ClientCredentials(ctx context.Context, ep Endpoint, scopes []string) (Token, error) {
	const op = "client_credentials"
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(scopes) > 0 {
		sc, err := joinScopes(ep, scopes)
		if err != nil {
			return Token{}, fmt.Errorf("oauth: %s: %w", op, err)
		}
		form.Set("scope", sc)
	}
	tok, err := tokenGrant(ctx, op, ep, form)
	if err != nil {
		return Token{}, err
	}
	tok.RefreshToken = secret.String{}
	return tok, nil
}

// tokenGrant posts one grant to the token endpoint and parses the answer
// with ep's scope separator and response fields. sent are the grant's own
// secrets (refresh token, code, verifier), scrubbed from every error along
// with the client secret.
func tokenGrant(ctx context.Context, op string, ep Endpoint, form url.Values, sent ...secret.String) (Token, error) {
	if _, err := scopeSeparator(ep); err != nil {
		return Token{}, fmt.Errorf("oauth: %s: %w", op, err)
	}
	if err := checkResponseFields(ep.ResponseFields); err != nil {
		return Token{}, fmt.Errorf("oauth: %s: %w", op, err)
	}
	status, body, err := post(ctx, op, ep, ep.TokenURL, form, sent...)
	if err != nil {
		return Token{}, err
	}
	sc := newScrubber(append([]secret.String{ep.ClientSecret}, sent...)...)
	if status < 200 || status > 299 {
		return Token{}, parseErrorBody(op, status, body, sc)
	}
	// Some providers answer 200 with an error object (Slack:
	// {"ok":false,"error":"invalid_code"}); an "error" member wins even
	// next to an access_token, which such an answer does not vouch for.
	if e := parseErrorBody(op, status, body, sc); e.Code != "" {
		return Token{}, e
	}
	tok, err := ParseTokenResponse(body, ep)
	if err != nil {
		return Token{}, fmt.Errorf("oauth: %s: %w", op, err)
	}
	return tok, nil
}

// Revoke revokes token at the provider (RFC 7009 §2.1) with the same client
// authentication as Refresh. hint is the token_type_hint ("refresh_token",
// "access_token" or "" for none). Any 2xx answer is success; per RFC 7009
// §2.2 that includes tokens the provider considers invalid already.
// Errors are classified as for Refresh; ErrNoRevocationEndpoint when the
// Endpoint has no RevocationURL.
func Revoke(ctx context.Context, ep Endpoint, token secret.String, hint string) error {
	const op = "revoke"
	if ep.RevocationURL == "" {
		return ErrNoRevocationEndpoint
	}
	if token.IsZero() {
		return fmt.Errorf("oauth: %s: %w", op, ErrEmptyToken)
	}
	form := url.Values{"token": {token.Reveal()}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	status, body, err := post(ctx, op, ep, ep.RevocationURL, form, token)
	if err != nil {
		return err
	}
	if status < 200 || status > 299 {
		return parseErrorBody(op, status, body, newScrubber(token, ep.ClientSecret))
	}
	return nil
}

// post sends an authenticated form POST and returns the status and a bounded
// body. Redirects come back as ErrRedirect, never followed.
func post(ctx context.Context, op string, ep Endpoint, endpointURL string, form url.Values, sent ...secret.String) (int, []byte, error) {
	u, err := url.Parse(endpointURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return 0, nil, fmt.Errorf("oauth: %s: %w: endpoint URL must be an absolute http(s) URL", op, ErrInvalidEndpoint)
	}
	req, err := newAuthedRequest(ctx, ep, endpointURL, form)
	if err != nil {
		return 0, nil, fmt.Errorf("oauth: %s: %w", op, err)
	}
	timeout := ep.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req = req.WithContext(ctx)

	var hc http.Client
	if ep.HTTPClient != nil {
		hc = *ep.HTTPClient // a copy: the caller's redirect policy stays theirs
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	sc := newScrubber(append([]secret.String{ep.ClientSecret}, sent...)...)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, &transportError{op: op, msg: sc.scrub(err.Error()), err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		return 0, nil, fmt.Errorf("oauth: %s: HTTP %d: %w", op, resp.StatusCode, ErrRedirect)
	}
	if resp.ContentLength > MaxResponseBytes {
		return 0, nil, fmt.Errorf("oauth: %s: HTTP %d: %w", op, resp.StatusCode, ErrResponseTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return 0, nil, &transportError{op: op, msg: "reading response: " + sc.scrub(err.Error()), err: err}
	}
	if len(body) > MaxResponseBytes {
		return 0, nil, fmt.Errorf("oauth: %s: HTTP %d: %w", op, resp.StatusCode, ErrResponseTooLarge)
	}
	return resp.StatusCode, body, nil
}

func newAuthedRequest(ctx context.Context, ep Endpoint, endpointURL string, form url.Values) (*http.Request, error) {
	switch ep.AuthStyle {
	case AuthStyleBasic, "":
	case AuthStyleBody:
		if ep.ClientID == "" {
			return nil, fmt.Errorf("%w: client_id is empty", ErrInvalidEndpoint)
		}
		form.Set("client_id", ep.ClientID)
		if !ep.ClientSecret.IsZero() {
			form.Set("client_secret", ep.ClientSecret.Reveal())
		}
	default:
		return nil, fmt.Errorf("%w: auth_style must be %q or %q", ErrInvalidEndpoint, AuthStyleBasic, AuthStyleBody)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpointURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("%w: bad endpoint URL", ErrInvalidEndpoint)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if ep.AuthStyle != AuthStyleBody {
		if ep.ClientID == "" {
			return nil, fmt.Errorf("%w: client_id is empty", ErrInvalidEndpoint)
		}
		// RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic
		// encoding (req.SetBasicAuth would skip that step).
		cred := url.QueryEscape(ep.ClientID) + ":" + url.QueryEscape(ep.ClientSecret.Reveal())
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(cred)))
	}
	return req, nil
}

// parseErrorBody turns an error answer into *Error. A body that is not an
// RFC 6749 §5.2 JSON object still yields an *Error with the status and no
// code; the body text itself never enters the error.
func parseErrorBody(op string, status int, body []byte, sc scrubber) *Error {
	e := &Error{Op: op, HTTPStatus: status}
	members, err := objectMembers(body)
	if err != nil {
		return e
	}
	if code, err := plainString(members["error"]); err == nil {
		e.Code = sc.sanitizeCode(code)
	}
	if d, err := plainString(members["error_description"]); err == nil {
		e.Description = sc.sanitizeDescription(d)
	}
	return e
}

func plainString(raw []byte) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", errors.New("not a string")
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}
