package policy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestVerifyGood(t *testing.T) {
	t.Parallel()
	k := testKeys()
	v := newTestVerifier(t)
	cases := []struct {
		name string
		alg  jose.SignatureAlgorithm
		key  any
		kid  string
	}{
		{"RS256", jose.RS256, k.rsa, "rsa1"},
		{"RS384", jose.RS384, k.rsa, "rsa1"},
		{"RS512", jose.RS512, k.rsa, "rsa1"},
		{"PS256", jose.PS256, k.rsa, "rsa1"},
		{"PS512", jose.PS512, k.rsa, "rsa1"},
		{"ES256", jose.ES256, k.ec256, "ec256"},
		{"ES384", jose.ES384, k.ec384, "ec384"},
		{"ES512", jose.ES512, k.ec521, "ec521"},
		{"EdDSA", jose.EdDSA, k.ed, "ed1"},
		// Without kid the verifier tries every key fitting alg.
		{"RS256 no kid", jose.RS256, k.rsa, ""},
		{"ES384 no kid", jose.ES384, k.ec384, ""},
		{"EdDSA no kid", jose.EdDSA, k.ed, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := sign(t, tc.alg, tc.key, tc.kid, goodClaims())
			c, err := v.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := Claims{
				Tenant:   "acme",
				Subject:  "user-42@acme",
				Issuer:   testIssuer,
				ID:       "assertion-1",
				IssuedAt: testNow.Add(-time.Minute),
				Expiry:   testNow.Add(2 * time.Minute),
			}
			if !c.IssuedAt.Equal(want.IssuedAt) || !c.Expiry.Equal(want.Expiry) {
				t.Fatalf("times: got iat %v exp %v, want %v %v", c.IssuedAt, c.Expiry, want.IssuedAt, want.Expiry)
			}
			c.IssuedAt, c.Expiry, want.IssuedAt, want.Expiry = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if c != want {
				t.Fatalf("claims = %+v, want %+v", c, want)
			}
		})
	}
}

func TestVerifyGoodClaimVariants(t *testing.T) {
	t.Parallel()
	k := testKeys()
	v := newTestVerifier(t)
	cases := []struct {
		name   string
		claims map[string]any
	}{
		{"aud array", with(goodClaims(), "aud", []string{"other", testAudience})},
		{"no sub no jti", without(goodClaims(), "sub", "jti")},
		{"expired within skew", with(goodClaims(), "iat", testNow.Add(-2*time.Minute).Unix(), "exp", testNow.Add(-10*time.Second).Unix())},
		{"iat ahead within skew", with(goodClaims(), "iat", testNow.Add(20*time.Second).Unix(), "exp", testNow.Add(time.Minute).Unix())},
		{"nbf past", with(goodClaims(), "nbf", testNow.Add(-time.Minute).Unix())},
		{"nbf ahead within skew", with(goodClaims(), "nbf", testNow.Add(20*time.Second).Unix())},
		{"lifetime exactly max", with(goodClaims(), "iat", testNow.Add(-time.Minute).Unix(), "exp", testNow.Add(4*time.Minute).Unix())},
		{"fractional dates", with(goodClaims(), "iat", float64(testNow.Unix())-0.5, "exp", float64(testNow.Unix())+60.25)},
		{"extra claims", with(goodClaims(), "scope", "x", "nested", map[string]any{"a": 1})},
		{"tenant max length", with(goodClaims(), "tenant_id", "a"+strings.Repeat("b", 127))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(sign(t, jose.ES256, k.ec256, "ec256", tc.claims))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.Tenant != tc.claims["tenant_id"] {
				t.Fatalf("tenant = %q", c.Tenant)
			}
		})
	}
}

func TestVerifyCustomTenantClaim(t *testing.T) {
	t.Parallel()
	k := testKeys()
	cfg := testConfig(standardJWKS(t))
	cfg.TenantClaim = "https://example.internal/tenant"
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(sign(t, jose.EdDSA, k.ed, "ed1", with(goodClaims(), "https://example.internal/tenant", "globex")))
	if err != nil || c.Tenant != "globex" {
		t.Fatalf("Verify = %+v, %v; want tenant globex", c, err)
	}
	// The default claim name is not consulted when another is configured.
	_, err = v.Verify(sign(t, jose.EdDSA, k.ed, "ed1", goodClaims()))
	assertReason(t, err, reasonTenantMissing, "")

	// Empty TenantClaim defaults to tenant_id.
	cfg.TenantClaim = ""
	v, err = NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(sign(t, jose.EdDSA, k.ed, "ed1", goodClaims())); err != nil || c.Tenant != "acme" {
		t.Fatalf("default claim: %+v, %v", c, err)
	}
}

// assertReason checks err is a refusal with the given reason that does not
// echo tok.
func assertReason(t *testing.T, err error, reason, tok string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want refusal %q", reason)
	}
	if !errors.Is(err, ErrInvalidAssertion) {
		t.Fatalf("err = %v; want ErrInvalidAssertion", err)
	}
	var ae *AssertionError
	if !errors.As(err, &ae) {
		t.Fatalf("err %T is not *AssertionError", err)
	}
	if ae.Reason != reason {
		t.Fatalf("reason = %q, want %q", ae.Reason, reason)
	}
	if tok == "" {
		return
	}
	msg := err.Error()
	for _, part := range strings.Split(tok, ".") {
		if len(part) >= 8 && strings.Contains(msg, part) {
			t.Fatalf("error %q echoes part of the token", msg)
		}
	}
}

func TestVerifyRefusesSignatureAttacks(t *testing.T) {
	t.Parallel()
	k := testKeys()
	v := newTestVerifier(t)
	claims := mustJSON(t, goodClaims())
	good := sign(t, jose.RS256, k.rsa, "rsa1", goodClaims())
	parts := strings.Split(good, ".")

	rsaDER, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaDER})
	rsaJWK := mustJSON(t, pubJWK("rsa1", &k.rsa.PublicKey))
	hs256 := func(secret []byte, header map[string]any) string {
		h := base64.RawURLEncoding.EncodeToString(mustJSON(t, header))
		p := base64.RawURLEncoding.EncodeToString(claims)
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(h + "." + p))
		return h + "." + p + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}

	tamperedPayload := parts[0] + "." +
		base64.RawURLEncoding.EncodeToString(mustJSON(t, with(goodClaims(), "tenant_id", "victim"))) + "." + parts[2]
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[len(sig)/2] ^= 0x01
	tamperedSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	// Header swapped to another alg of the same key family: the signature
	// was computed over the original header, so it no longer matches.
	psHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"PS256","kid":"rsa1","typ":"JWT"}`))
	swappedAlg := psHeader + "." + parts[1] + "." + parts[2]

	// An attacker's key embedded in the header must never be used.
	attackerJWK := pubJWK("", k.edOther.Public())
	embeddedJWK := signRaw(t, jose.EdDSA, k.edOther, "", claims, map[string]any{"jwk": attackerJWK})

	cases := []struct {
		name, tok, reason string
	}{
		{"alg none", handMade(t, map[string]any{"alg": "none", "typ": "JWT"}, claims, nil), reasonAlg},
		{"alg none with kid", handMade(t, map[string]any{"alg": "none", "kid": "rsa1"}, claims, nil), reasonAlg},
		{"alg None", handMade(t, map[string]any{"alg": "None"}, claims, []byte("x")), reasonAlg},
		{"alg missing", handMade(t, map[string]any{"kid": "rsa1"}, claims, []byte("x")), reasonAlg},
		{"HS256 key=PEM", hs256(rsaPEM, map[string]any{"alg": "HS256", "typ": "JWT"}), reasonAlg},
		{"HS256 key=DER kid", hs256(rsaDER, map[string]any{"alg": "HS256", "kid": "rsa1"}), reasonAlg},
		{"HS256 key=JWK JSON", hs256(rsaJWK, map[string]any{"alg": "HS256", "kid": "rsa1"}), reasonAlg},
		{"HS256 key=modulus", hs256(k.rsa.PublicKey.N.Bytes(), map[string]any{"alg": "HS256"}), reasonAlg},
		{"HS512 via go-jose", signRaw(t, jose.HS512, rsaPEM, "rsa1", claims, nil), reasonAlg},
		{"wrong RSA key with kid", sign(t, jose.RS256, k.rsaOther, "rsa1", goodClaims()), reasonBadSignature},
		{"wrong RSA key no kid", sign(t, jose.RS256, k.rsaOther, "", goodClaims()), reasonBadSignature},
		{"wrong Ed25519 key", sign(t, jose.EdDSA, k.edOther, "ed1", goodClaims()), reasonBadSignature},
		{"unknown kid", sign(t, jose.RS256, k.rsa, "rsa-unknown", goodClaims()), reasonUnknownKID},
		{"kid of EC key, RS256", sign(t, jose.RS256, k.rsa, "ec256", goodClaims()), reasonKeyMismatch},
		{"kid of P-256 key, ES384", sign(t, jose.ES384, k.ec384, "ec256", goodClaims()), reasonKeyMismatch},
		{"kid of RSA key, EdDSA", sign(t, jose.EdDSA, k.ed, "rsa1", goodClaims()), reasonKeyMismatch},
		{"tampered payload", tamperedPayload, reasonBadSignature},
		{"tampered signature", tamperedSig, reasonBadSignature},
		{"swapped alg", swappedAlg, reasonBadSignature},
		{"signature stripped", parts[0] + "." + parts[1] + ".", reasonBadSignature},
		{"embedded jwk", embeddedJWK, reasonBadSignature},
		{"crit unknown", signRaw(t, jose.RS256, k.rsa, "rsa1", claims, map[string]any{"crit": []string{"exp-ext"}, "exp-ext": true}), reasonCrit},
		{"crit b64", signRaw(t, jose.RS256, k.rsa, "rsa1", claims, map[string]any{"crit": []string{"b64"}, "b64": true}), reasonCrit},
		{"b64 without crit", signRaw(t, jose.RS256, k.rsa, "rsa1", claims, map[string]any{"b64": true}), reasonHeader},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.tok)
			assertReason(t, err, tc.reason, tc.tok)
		})
	}
}

func TestVerifyNoKeyFitsAlg(t *testing.T) {
	t.Parallel()
	k := testKeys()
	v, err := NewVerifier(testConfig(jwks(t, pubJWK("", &k.rsa.PublicKey))))
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(sign(t, jose.ES256, k.ec256, "", goodClaims()))
	assertReason(t, err, reasonNoKey, "")
	// The same RSA key accepts its own tokens, so the refusal above is about fit.
	if _, err := v.Verify(sign(t, jose.RS256, k.rsa, "", goodClaims())); err != nil {
		t.Fatalf("RS256: %v", err)
	}
}

func TestVerifyJWKAlgPinsAlgorithm(t *testing.T) {
	t.Parallel()
	k := testKeys()
	key := pubJWK("rsa1", &k.rsa.PublicKey)
	key.Algorithm = string(jose.PS256)
	v, err := NewVerifier(testConfig(jwks(t, key)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(sign(t, jose.PS256, k.rsa, "rsa1", goodClaims())); err != nil {
		t.Fatalf("PS256: %v", err)
	}
	_, err = v.Verify(sign(t, jose.RS256, k.rsa, "rsa1", goodClaims()))
	assertReason(t, err, reasonKeyMismatch, "")
	_, err = v.Verify(sign(t, jose.RS256, k.rsa, "", goodClaims()))
	assertReason(t, err, reasonNoKey, "")
}

func TestVerifyRefusesBadClaims(t *testing.T) {
	t.Parallel()
	k := testKeys()
	v := newTestVerifier(t)
	at := func(d time.Duration) int64 { return testNow.Add(d).Unix() }
	cases := []struct {
		name   string
		claims map[string]any
		reason string
	}{
		{"wrong iss", with(goodClaims(), "iss", "https://evil.example"), reasonIssuer},
		{"iss missing", without(goodClaims(), "iss"), reasonIssuer},
		{"iss number", with(goodClaims(), "iss", 7), reasonIssuer},
		{"iss case", with(goodClaims(), "iss", strings.ToUpper(testIssuer)), reasonIssuer},
		{"aud missing", without(goodClaims(), "aud"), reasonAudience},
		{"aud other", with(goodClaims(), "aud", "other"), reasonAudience},
		{"aud array without", with(goodClaims(), "aud", []string{"a", "b"}), reasonAudience},
		{"aud empty array", with(goodClaims(), "aud", []string{}), reasonAudience},
		{"aud number", with(goodClaims(), "aud", 1), reasonAudience},
		{"aud mixed array", with(goodClaims(), "aud", []any{1, testAudience}), reasonAudience},
		{"aud prefix", with(goodClaims(), "aud", testAudience+"x"), reasonAudience},
		{"exp missing", without(goodClaims(), "exp"), reasonNoExp},
		{"exp string", with(goodClaims(), "exp", "tomorrow"), reasonClaims},
		{"exp negative", with(goodClaims(), "exp", -1), reasonClaims},
		{"exp huge", with(goodClaims(), "exp", 1e300), reasonClaims},
		{"exp null", with(goodClaims(), "exp", nil), reasonClaims},
		{"expired", with(goodClaims(), "iat", at(-3*time.Minute), "exp", at(-31*time.Second)), reasonExpired},
		{"expired at skew edge", with(goodClaims(), "iat", at(-3*time.Minute), "exp", at(-testSkew)), reasonExpired},
		{"iat missing", without(goodClaims(), "iat"), reasonNoIat},
		{"iat string", with(goodClaims(), "iat", "now"), reasonClaims},
		{"iat in the future", with(goodClaims(), "iat", at(time.Minute), "exp", at(2*time.Minute)), reasonIatFuture},
		{"lifetime > max", with(goodClaims(), "iat", at(-time.Minute), "exp", at(4*time.Minute+time.Second)), reasonLifetime},
		{"lifetime huge", with(goodClaims(), "iat", at(-time.Minute), "exp", at(24*time.Hour)), reasonLifetime},
		{"exp before iat", with(goodClaims(), "iat", at(0), "exp", at(-time.Second)), reasonExpBeforeIat},
		{"exp equals iat", with(goodClaims(), "iat", at(10*time.Second), "exp", at(10*time.Second)), reasonExpBeforeIat},
		{"nbf in the future", with(goodClaims(), "nbf", at(time.Minute)), reasonNotYetValid},
		{"nbf string", with(goodClaims(), "nbf", "later"), reasonClaims},
		{"tenant missing", without(goodClaims(), "tenant_id"), reasonTenantMissing},
		{"tenant null", with(goodClaims(), "tenant_id", nil), reasonTenantMissing},
		{"tenant number", with(goodClaims(), "tenant_id", 42), reasonTenantType},
		{"tenant bool", with(goodClaims(), "tenant_id", true), reasonTenantType},
		{"tenant array", with(goodClaims(), "tenant_id", []string{"acme"}), reasonTenantType},
		{"tenant object", with(goodClaims(), "tenant_id", map[string]any{"id": "acme"}), reasonTenantType},
		{"tenant empty", with(goodClaims(), "tenant_id", ""), reasonTenantInvalid},
		{"tenant slash", with(goodClaims(), "tenant_id", "acme/../globex"), reasonTenantInvalid},
		{"tenant space", with(goodClaims(), "tenant_id", "acme corp"), reasonTenantInvalid},
		{"tenant NUL", with(goodClaims(), "tenant_id", "acme\x00"), reasonTenantInvalid},
		{"tenant leading dot", with(goodClaims(), "tenant_id", ".acme"), reasonTenantInvalid},
		{"tenant unicode", with(goodClaims(), "tenant_id", "acmé"), reasonTenantInvalid},
		{"tenant too long", with(goodClaims(), "tenant_id", strings.Repeat("a", 129)), reasonTenantInvalid},
		{"sub number", with(goodClaims(), "sub", 5), reasonSubject},
		{"sub control chars", with(goodClaims(), "sub", "user\n{\"forged\":1}"), reasonSubject},
		{"sub too long", with(goodClaims(), "sub", strings.Repeat("u", maxSubjectBytes+1)), reasonSubject},
		{"jti number", with(goodClaims(), "jti", 5), reasonClaims},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := sign(t, jose.ES256, k.ec256, "ec256", tc.claims)
			_, err := v.Verify(tok)
			assertReason(t, err, tc.reason, tok)
		})
	}
}

func TestVerifyRefusesBadPayloads(t *testing.T) {
	t.Parallel()
	k := testKeys()
	v := newTestVerifier(t)
	good := string(mustJSON(t, goodClaims()))
	dupTenant := strings.TrimSuffix(good, "}") + `,"tenant_id":"victim"}`
	cases := []struct {
		name, payload string
	}{
		{"duplicate tenant claim", dupTenant},
		{"duplicate iss", `{"iss":"x",` + good[1:]},
		{"array", `[` + good + `]`},
		{"string", `"` + "acme" + `"`},
		{"empty", ``},
		{"trailing data", good + `{}`},
		{"truncated", good[:len(good)-1]},
		{"not JSON", `tenant_id=acme`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := signRaw(t, jose.ES256, k.ec256, "ec256", []byte(tc.payload), nil)
			_, err := v.Verify(tok)
			assertReason(t, err, reasonClaims, tok)
		})
	}
}

func TestVerifyRefusesOtherSerializations(t *testing.T) {
	t.Parallel()
	k := testKeys()
	v := newTestVerifier(t)
	claims := mustJSON(t, goodClaims())
	good := sign(t, jose.RS256, k.rsa, "rsa1", goodClaims())

	// JWS JSON serialization of a token that is otherwise fine.
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k.rsa}, (&jose.SignerOptions{}).WithHeader("kid", "rsa1"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	full := obj.FullSerialize()

	// JWE to the RSA key of the JWKS, carrying good claims.
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.RSA_OAEP_256, Key: &k.rsa.PublicKey, KeyID: "rsa1"},
		(&jose.EncrypterOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	jwe, err := enc.Encrypt(claims)
	if err != nil {
		t.Fatal(err)
	}
	jweCompact, err := jwe.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	// Nested: a good JWS inside a JWE.
	nested, err := enc.Encrypt([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	nestedCompact, err := nested.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}

	oversized := sign(t, jose.RS256, k.rsa, "rsa1", with(goodClaims(), "pad", strings.Repeat("p", MaxAssertionBytes)))

	cases := []struct {
		name, tok, reason string
	}{
		{"JSON serialization", full, reasonNotCompact},
		{"flattened JSON", `{"payload":"` + strings.Split(good, ".")[1] + `"}`, reasonNotCompact},
		{"JWE compact", jweCompact, reasonNotCompact},
		{"nested JWE", nestedCompact, reasonNotCompact},
		{"JWE full", jwe.FullSerialize(), reasonNotCompact},
		{"oversized", oversized, reasonTooLarge},
		{"oversized garbage", strings.Repeat("a", MaxAssertionBytes+1), reasonTooLarge},
		{"empty", "", reasonEmpty},
		{"garbage", "not a token", reasonNotCompact},
		{"one part", "abc", reasonNotCompact},
		{"two parts", "abc.def", reasonNotCompact},
		{"four parts", good + ".x", reasonNotCompact},
		{"dots only", "..", reasonAlg},
		{"bad base64 header", "a.b.c", reasonMalformed},
		{"padded base64", strings.Replace(good, ".", "=.", 1), reasonNotCompact},
		{"leading space", " " + good, reasonNotCompact},
		{"trailing newline", good + "\n", reasonNotCompact},
		{"Bearer prefix", "Bearer " + good, reasonNotCompact},
		{"header not JSON", base64.RawURLEncoding.EncodeToString([]byte("nope")) + "." + strings.Split(good, ".")[1] + ".AA", reasonMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.tok)
			assertReason(t, err, tc.reason, tc.tok)
		})
	}
}

func TestVerifyNilVerifier(t *testing.T) {
	t.Parallel()
	var v *Verifier
	_, err := v.Verify("a.b.c")
	assertReason(t, err, reasonNoVerifier, "")
}

func TestNewVerifierConfig(t *testing.T) {
	t.Parallel()
	good := standardJWKS(t)
	cases := []struct {
		name string
		edit func(*VerifierConfig)
	}{
		{"no issuer", func(c *VerifierConfig) { c.Issuer = "" }},
		{"no audience", func(c *VerifierConfig) { c.Audience = "" }},
		{"zero max lifetime", func(c *VerifierConfig) { c.MaxLifetime = 0 }},
		{"negative max lifetime", func(c *VerifierConfig) { c.MaxLifetime = -time.Second }},
		{"negative skew", func(c *VerifierConfig) { c.ClockSkew = -time.Second }},
		{"tenant claim sub", func(c *VerifierConfig) { c.TenantClaim = "sub" }},
		{"tenant claim aud", func(c *VerifierConfig) { c.TenantClaim = "aud" }},
		{"no JWKS", func(c *VerifierConfig) { c.JWKS = nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(good)
			tc.edit(&cfg)
			if v, err := NewVerifier(cfg); err == nil || !errors.Is(err, ErrVerifierConfig) {
				t.Fatalf("NewVerifier = %v, %v; want ErrVerifierConfig", v, err)
			}
		})
	}
	// Now defaults to the real clock.
	cfg := testConfig(good)
	cfg.Now = nil
	v, err := NewVerifier(cfg)
	if err != nil || v.now == nil {
		t.Fatalf("NewVerifier with nil Now: %v", err)
	}
}

func TestNewVerifierRefusesBadJWKS(t *testing.T) {
	t.Parallel()
	k := testKeys()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	privRSA := mustJSON(t, jose.JSONWebKey{Key: k.rsa, KeyID: "rsa1"})
	privEC := mustJSON(t, jose.JSONWebKey{Key: k.ec256, KeyID: "ec"})
	privEd := mustJSON(t, jose.JSONWebKey{Key: k.ed, KeyID: "ed"})
	oct := mustJSON(t, jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hmac"})
	set := func(keys ...string) []byte { return []byte(`{"keys":[` + strings.Join(keys, ",") + `]}`) }
	pub := func(kid string, key any, edit func(*jose.JSONWebKey)) string {
		j := pubJWK(kid, key)
		if edit != nil {
			edit(&j)
		}
		return string(mustJSON(t, j))
	}
	goodRSA := pub("rsa1", &k.rsa.PublicKey, nil)

	var secretD struct {
		D string `json:"d"`
	}
	if err := json.Unmarshal(privRSA, &secretD); err != nil || secretD.D == "" {
		t.Fatalf("private JWK has no d: %v", err)
	}

	cases := []struct {
		name string
		jwks []byte
	}{
		{"not JSON", []byte("nope")},
		{"JSON array", []byte(`[` + goodRSA + `]`)},
		{"no keys member", []byte(`{}`)},
		{"empty keys", []byte(`{"keys":[]}`)},
		{"key not object", set(`"x"`)},
		{"oct key", set(goodRSA, string(oct))},
		{"oct key alone", set(`{"kty":"oct","k":"c2VjcmV0"}`)},
		{"private RSA", set(string(privRSA))},
		{"private EC", set(string(privEC))},
		{"private Ed25519", set(string(privEd))},
		{"RSA 1024", set(pub("small", &small.PublicKey, nil))},
		{"use enc", set(pub("rsa1", &k.rsa.PublicKey, func(j *jose.JSONWebKey) { j.Use = "enc" }))},
		{"alg HS256 on RSA", set(pub("rsa1", &k.rsa.PublicKey, func(j *jose.JSONWebKey) { j.Algorithm = "HS256" }))},
		{"alg none", set(pub("rsa1", &k.rsa.PublicKey, func(j *jose.JSONWebKey) { j.Algorithm = "none" }))},
		{"alg ES256 on RSA", set(pub("rsa1", &k.rsa.PublicKey, func(j *jose.JSONWebKey) { j.Algorithm = "ES256" }))},
		{"alg ES256 on P-384", set(pub("ec", &k.ec384.PublicKey, func(j *jose.JSONWebKey) { j.Algorithm = "ES256" }))},
		{"alg RSA-OAEP", set(pub("rsa1", &k.rsa.PublicKey, func(j *jose.JSONWebKey) { j.Algorithm = "RSA-OAEP" }))},
		{"duplicate kid", set(goodRSA, pub("rsa1", &k.ec256.PublicKey, nil))},
		{"OKP X25519", set(`{"kty":"OKP","crv":"X25519","x":"` + base64.RawURLEncoding.EncodeToString(make([]byte, 32)) + `"}`)},
		{"unknown kty", set(`{"kty":"AKP","alg":"ML-DSA-44","pub":"AAAA"}`)},
		{"missing kty", set(`{"n":"AQAB","e":"AQAB"}`)},
		{"RSA missing n", set(`{"kty":"RSA","e":"AQAB"}`)},
		{"EC off-curve", set(`{"kty":"EC","crv":"P-256","x":"` + base64.RawURLEncoding.EncodeToString(make([]byte, 32)) + `","y":"` + base64.RawURLEncoding.EncodeToString(make([]byte, 32)) + `"}`)},
		{"oversized", append([]byte(`{"keys":[`+goodRSA+`],"pad":"`), append([]byte(strings.Repeat("x", MaxJWKSBytes)), '"', '}')...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(testConfig(tc.jwks))
			if err == nil || !errors.Is(err, ErrVerifierConfig) {
				t.Fatalf("NewVerifier = %v, %v; want ErrVerifierConfig", v, err)
			}
			if strings.Contains(err.Error(), secretD.D) {
				t.Fatalf("error reveals private key material: %v", err)
			}
		})
	}
}

func TestLoadJWKSFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "tenant-context.jwks.json")
	want := standardJWKS(t)
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := LoadJWKSFile(path)
	if err != nil || string(got) != string(want) {
		t.Fatalf("LoadJWKSFile = %d bytes, %v", len(got), err)
	}
	if _, err := NewVerifier(testConfig(got)); err != nil {
		t.Fatalf("NewVerifier(loaded): %v", err)
	}

	if _, err := LoadJWKSFile(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := LoadJWKSFile(dir); !errors.Is(err, ErrVerifierConfig) {
		t.Fatalf("directory: %v", err)
	}
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, make([]byte, MaxJWKSBytes+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadJWKSFile(big); !errors.Is(err, ErrVerifierConfig) {
		t.Fatalf("oversized: %v", err)
	}
}

func TestVerifierStringHasNoKeyMaterial(t *testing.T) {
	t.Parallel()
	k := testKeys()
	v := newTestVerifier(t)
	s := v.String()
	n := base64.RawURLEncoding.EncodeToString(k.rsa.PublicKey.N.Bytes())
	if strings.Contains(s, n[:16]) || !strings.Contains(s, "rsa1") {
		t.Fatalf("String() = %q", s)
	}
}

func BenchmarkVerifyES256(b *testing.B) {
	k := testKeys()
	v := newTestVerifier(b)
	tok := sign(b, jose.ES256, k.ec256, "ec256", goodClaims())
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
