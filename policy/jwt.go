package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/vaultd/vaultd/internal/ids"
)

// Limits.
const (
	// MaxAssertionBytes bounds a tenant-context JWT; real ones are well under
	// 2 KiB, and parsing cost must not be the caller's to choose.
	MaxAssertionBytes = 8 << 10
	// MaxJWKSBytes bounds the JWKS file.
	MaxJWKSBytes = 1 << 20
	// MinRSABits is the smallest RSA modulus accepted in the JWKS.
	MinRSABits = 2048
	// DefaultTenantClaim is the tenant claim used when none is configured.
	DefaultTenantClaim = "tenant_id"
	// maxSubjectBytes bounds the sub claim, which travels into audit.
	maxSubjectBytes = 256
	maxIDBytes      = 256
)

// Sentinel errors of tenant-context verification.
var (
	// ErrMissingAssertion: the request needs an X-Tenant-Context JWT and
	// has none.
	ErrMissingAssertion = errors.New("policy: tenant assertion required")
	// ErrInvalidAssertion: the JWT was refused. The error wrapping it is an
	// *AssertionError whose Reason says why.
	ErrInvalidAssertion = errors.New("policy: invalid tenant assertion")
	// ErrVerifierConfig: the verifier configuration or JWKS is unusable.
	ErrVerifierConfig = errors.New("policy: tenant-context verifier config")
)

// AssertionError is the error of a refused assertion. Reason is a short
// fixed phrase (never token content) fit for logs and metric labels.
type AssertionError struct {
	Reason string
}

func (e *AssertionError) Error() string { return ErrInvalidAssertion.Error() + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrInvalidAssertion) hold.
func (e *AssertionError) Unwrap() error { return ErrInvalidAssertion }

func invalid(reason string) error { return &AssertionError{Reason: reason} }

// Refusal reasons.
const (
	reasonTooLarge      = "too large"
	reasonEmpty         = "empty"
	reasonNotCompact    = "not a compact JWS"
	reasonMalformed     = "malformed"
	reasonAlg           = "algorithm not allowed"
	reasonCrit          = "unsupported critical header"
	reasonHeader        = "unsupported header"
	reasonUnknownKID    = "unknown key id"
	reasonKeyMismatch   = "key does not fit algorithm"
	reasonNoKey         = "no key fits algorithm"
	reasonBadSignature  = "bad signature"
	reasonClaims        = "malformed claims"
	reasonIssuer        = "issuer mismatch"
	reasonAudience      = "audience mismatch"
	reasonNoExp         = "exp missing"
	reasonExpired       = "expired"
	reasonNoIat         = "iat missing"
	reasonIatFuture     = "iat in the future"
	reasonLifetime      = "lifetime exceeds maximum"
	reasonExpBeforeIat  = "exp not after iat"
	reasonNotYetValid   = "not yet valid"
	reasonTenantMissing = "tenant claim missing"
	reasonTenantType    = "tenant claim not a string"
	reasonTenantInvalid = "tenant claim invalid"
	reasonSubject       = "sub invalid"
	reasonNoVerifier    = "tenant context not configured"
)

// allowedAlgs are the only signature algorithms accepted: asymmetric ones.
// HMAC is excluded so a public key can never serve as an HMAC secret, and
// "none" is never a signature.
var allowedAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// registeredClaims may not be configured as the tenant claim.
var registeredClaims = map[string]bool{"iss": true, "sub": true, "aud": true, "exp": true, "nbf": true, "iat": true, "jti": true}

// VerifierConfig configures a Verifier ([tenant_context] in the config).
type VerifierConfig struct {
	// JWKS is a JWK Set (RFC 7517 §5) of public signature keys.
	JWKS []byte
	// Issuer must equal the token's iss.
	Issuer string
	// Audience must be one of the token's aud values.
	Audience string
	// TenantClaim names the claim holding the tenant id
	// (DefaultTenantClaim if empty).
	TenantClaim string
	// MaxLifetime bounds exp - iat; required.
	MaxLifetime time.Duration
	// ClockSkew is the tolerance applied to exp, iat and nbf.
	ClockSkew time.Duration
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Claims are the verified claims of a tenant-context JWT.
type Claims struct {
	Tenant   string
	Subject  string // "" if the token has no sub
	Issuer   string
	ID       string // jti, "" if absent
	IssuedAt time.Time
	Expiry   time.Time
}

// Verifier checks tenant-context JWTs. It is immutable and safe for
// concurrent use; a reload builds a new one.
type Verifier struct {
	keys        []jose.JSONWebKey
	issuer      string
	audience    string
	tenantClaim string
	maxLifetime time.Duration
	skew        time.Duration
	now         func() time.Time
}

// LoadJWKSFile reads a JWKS file (at most MaxJWKSBytes). The content is
// public key material; NewVerifier validates it.
func LoadJWKSFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: JWKS file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("policy: JWKS file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: JWKS file %s is not a regular file", ErrVerifierConfig, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("policy: JWKS file %s: %w", path, err)
	}
	if len(b) > MaxJWKSBytes {
		return nil, fmt.Errorf("%w: JWKS file %s is larger than %d bytes", ErrVerifierConfig, path, MaxJWKSBytes)
	}
	return b, nil
}

// NewVerifier validates cfg and its JWKS. Every JWKS key must be a public
// RSA (>= 2048 bits), EC (P-256/384/521) or Ed25519 key; symmetric ("oct")
// keys and any private key material are refused, as are a "use" other
// than "sig", an "alg" outside the allowed asymmetric set or not fitting
// the key, and a kid used twice.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Issuer == "" {
		return nil, fmt.Errorf("%w: issuer is required", ErrVerifierConfig)
	}
	if cfg.Audience == "" {
		return nil, fmt.Errorf("%w: audience is required", ErrVerifierConfig)
	}
	if cfg.TenantClaim == "" {
		cfg.TenantClaim = DefaultTenantClaim
	}
	if registeredClaims[cfg.TenantClaim] {
		return nil, fmt.Errorf("%w: tenant_claim %q is a registered JWT claim", ErrVerifierConfig, cfg.TenantClaim)
	}
	if cfg.MaxLifetime <= 0 {
		return nil, fmt.Errorf("%w: max_lifetime must be positive", ErrVerifierConfig)
	}
	if cfg.ClockSkew < 0 {
		return nil, fmt.Errorf("%w: clock skew must not be negative", ErrVerifierConfig)
	}
	keys, err := parseJWKS(cfg.JWKS)
	if err != nil {
		return nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Verifier{
		keys:        keys,
		issuer:      cfg.Issuer,
		audience:    cfg.Audience,
		tenantClaim: cfg.TenantClaim,
		maxLifetime: cfg.MaxLifetime,
		skew:        cfg.ClockSkew,
		now:         now,
	}, nil
}

// Verify checks a tenant-context JWT in JWS compact serialization and
// returns its claims. Every refusal is an *AssertionError wrapping
// ErrInvalidAssertion; no error contains any part of the token.
//
// Checks: size <= MaxAssertionBytes; exactly three base64url segments
// (so JSON serialization and JWE are refused); alg in the asymmetric set
// (so "none" and HMAC are refused); no "crit" or "b64" header; the key is
// the JWKS key named by kid, or, without kid, any JWKS key fitting alg;
// the signature; then iss == Issuer, Audience in aud, exp present and not
// passed, iat present and not in the future, exp - iat <= MaxLifetime,
// nbf (if present) reached, all with ClockSkew tolerance; and the tenant
// claim a string that is a valid id (ids.Valid).
func (v *Verifier) Verify(compact string) (Claims, error) {
	if v == nil {
		return Claims{}, invalid(reasonNoVerifier)
	}
	if len(compact) > MaxAssertionBytes {
		return Claims{}, invalid(reasonTooLarge)
	}
	if compact == "" {
		return Claims{}, invalid(reasonEmpty)
	}
	if !isCompactJWS(compact) {
		return Claims{}, invalid(reasonNotCompact)
	}
	jws, err := jose.ParseSignedCompact(compact, allowedAlgs)
	if err != nil {
		var algErr *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &algErr) {
			return Claims{}, invalid(reasonAlg)
		}
		return Claims{}, invalid(reasonMalformed)
	}
	if len(jws.Signatures) != 1 {
		return Claims{}, invalid(reasonMalformed)
	}
	h := jws.Signatures[0].Header
	alg := jose.SignatureAlgorithm(h.Algorithm)
	if !algAllowed(alg) { // ParseSignedCompact checked; keep the guard local
		return Claims{}, invalid(reasonAlg)
	}
	// No extension is understood, so every crit is unknown (RFC 7515
	// §4.1.11). b64=false (RFC 7797) would change what is signed.
	if _, ok := h.ExtraHeaders["crit"]; ok {
		return Claims{}, invalid(reasonCrit)
	}
	if _, ok := h.ExtraHeaders["b64"]; ok {
		return Claims{}, invalid(reasonHeader)
	}

	var candidates []jose.JSONWebKey
	if h.KeyID != "" {
		for _, k := range v.keys {
			if k.KeyID == h.KeyID {
				candidates = append(candidates, k)
			}
		}
		if len(candidates) == 0 {
			return Claims{}, invalid(reasonUnknownKID)
		}
		if !fits(candidates[0], alg) {
			return Claims{}, invalid(reasonKeyMismatch)
		}
	} else {
		for _, k := range v.keys {
			if fits(k, alg) {
				candidates = append(candidates, k)
			}
		}
		if len(candidates) == 0 {
			return Claims{}, invalid(reasonNoKey)
		}
	}
	var payload []byte
	for _, k := range candidates {
		// The bare public key, not the JWK: go-jose then uses exactly it
		// and never consults header-supplied keys.
		if p, err := jws.Verify(k.Key); err == nil {
			payload = p
			break
		}
	}
	if payload == nil {
		return Claims{}, invalid(reasonBadSignature)
	}
	return v.checkClaims(payload)
}

// isCompactJWS reports whether s is three base64url segments: the shape
// of a compact JWS, and nothing else (no JSON, no five-part JWE, no
// whitespace or padding).
func isCompactJWS(s string) bool {
	dots := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2
}

func (v *Verifier) checkClaims(payload []byte) (Claims, error) {
	cl, err := objectMembers(payload)
	if err != nil {
		return Claims{}, invalid(reasonClaims)
	}
	var c Claims

	if err := optString(cl, "iss", &c.Issuer); err != nil || c.Issuer != v.issuer {
		return Claims{}, invalid(reasonIssuer)
	}
	if !audienceContains(cl["aud"], v.audience) {
		return Claims{}, invalid(reasonAudience)
	}

	now := v.now()
	exp, ok, err := numericDate(cl, "exp")
	if err != nil {
		return Claims{}, invalid(reasonClaims)
	}
	if !ok {
		return Claims{}, invalid(reasonNoExp)
	}
	if !now.Before(exp.Add(v.skew)) {
		return Claims{}, invalid(reasonExpired)
	}
	iat, ok, err := numericDate(cl, "iat")
	if err != nil {
		return Claims{}, invalid(reasonClaims)
	}
	if !ok {
		return Claims{}, invalid(reasonNoIat)
	}
	if iat.After(now.Add(v.skew)) {
		return Claims{}, invalid(reasonIatFuture)
	}
	if !exp.After(iat) {
		return Claims{}, invalid(reasonExpBeforeIat)
	}
	if exp.Sub(iat) > v.maxLifetime {
		return Claims{}, invalid(reasonLifetime)
	}
	nbf, ok, err := numericDate(cl, "nbf")
	if err != nil {
		return Claims{}, invalid(reasonClaims)
	}
	if ok && nbf.After(now.Add(v.skew)) {
		return Claims{}, invalid(reasonNotYetValid)
	}

	raw, ok := cl[v.tenantClaim]
	if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return Claims{}, invalid(reasonTenantMissing)
	}
	if err := json.Unmarshal(raw, &c.Tenant); err != nil {
		return Claims{}, invalid(reasonTenantType)
	}
	if !ids.Valid(c.Tenant) {
		return Claims{}, invalid(reasonTenantInvalid)
	}

	// sub becomes on_behalf_of in audit: keep it short and printable.
	if err := optString(cl, "sub", &c.Subject); err != nil || len(c.Subject) > maxSubjectBytes || !printable(c.Subject) {
		return Claims{}, invalid(reasonSubject)
	}
	if err := optString(cl, "jti", &c.ID); err != nil || len(c.ID) > maxIDBytes || !printable(c.ID) {
		return Claims{}, invalid(reasonClaims)
	}
	c.IssuedAt, c.Expiry = iat, exp
	return c, nil
}

// objectMembers splits a JSON object into its members, refusing anything
// but an object and any duplicate member name (parsers disagree on which
// duplicate wins, and a tenant claim must mean one thing).
func objectMembers(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not an object")
	}
	m := map[string]json.RawMessage{}
	// Bounded by the input: each iteration consumes a member.
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, ok := t.(string)
		if !ok {
			return nil, errors.New("bad member name")
		}
		if _, dup := m[name]; dup {
			return nil, errors.New("duplicate member")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		m[name] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data")
	}
	return m, nil
}

// optString reads an optional string member into dst.
func optString(m map[string]json.RawMessage, name string, dst *string) error {
	raw, ok := m[name]
	if !ok {
		return nil
	}
	return json.Unmarshal(raw, dst)
}

// audienceContains: aud is a string or an array of strings (RFC 7519
// §4.1.3); anything else never matches.
func audienceContains(raw json.RawMessage, want string) bool {
	if raw == nil {
		return false
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return one == want
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return false
	}
	for _, a := range many {
		if a == want {
			return true
		}
	}
	return false
}

// maxNumericDate (year 9999) keeps conversions far from overflow.
const maxNumericDate = 253402300799

// numericDate reads an optional NumericDate (seconds since the epoch,
// possibly fractional). A present value that is not a number in
// [0, year 9999] is an error.
func numericDate(m map[string]json.RawMessage, name string) (time.Time, bool, error) {
	raw, ok := m[name]
	if !ok {
		return time.Time{}, false, nil
	}
	var f float64
	// null would decode as 0 (1970) without error.
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) || json.Unmarshal(raw, &f) != nil {
		return time.Time{}, true, fmt.Errorf("%s: not a number", name)
	}
	if math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return time.Time{}, true, fmt.Errorf("%s: out of range", name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true, nil
}

// String describes the verifier without key material.
func (v *Verifier) String() string {
	if v == nil {
		return "policy.Verifier(nil)"
	}
	kids := make([]string, 0, len(v.keys))
	for _, k := range v.keys {
		kids = append(kids, k.KeyID)
	}
	return fmt.Sprintf("policy.Verifier(iss=%q aud=%q keys=[%s])", v.issuer, v.audience, strings.Join(kids, ","))
}
