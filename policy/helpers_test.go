package policy

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// testNow is the fixed clock of every verifier in the tests.
var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	testIssuer   = "https://auth.example.internal"
	testAudience = "vaultd"
	testMaxLife  = 5 * time.Minute
	testSkew     = 30 * time.Second
)

// testKeys are generated once per test binary: key generation (RSA in
// particular) is the slow part, and the keys carry no state.
type testKeySet struct {
	rsa, rsaOther *rsa.PrivateKey
	ec256         *ecdsa.PrivateKey
	ec384         *ecdsa.PrivateKey
	ec521         *ecdsa.PrivateKey
	ed            ed25519.PrivateKey
	edOther       ed25519.PrivateKey
}

var testKeys = sync.OnceValue(func() *testKeySet {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	var k testKeySet
	var err error
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsaOther, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.ec256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	k.ec521, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	_, k.edOther, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	return &k
})

// jwks builds a JWK Set of the public halves of keys, named by kid.
func jwks(t testing.TB, keys ...jose.JSONWebKey) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatalf("marshal JWKS: %v", err)
	}
	return b
}

func pubJWK(kid string, key any) jose.JSONWebKey {
	return jose.JSONWebKey{Key: key, KeyID: kid, Use: "sig"}
}

// standardJWKS holds every good key type, each with a kid.
func standardJWKS(t testing.TB) []byte {
	k := testKeys()
	return jwks(t,
		pubJWK("rsa1", &k.rsa.PublicKey),
		pubJWK("ec256", &k.ec256.PublicKey),
		pubJWK("ec384", &k.ec384.PublicKey),
		pubJWK("ec521", &k.ec521.PublicKey),
		pubJWK("ed1", k.ed.Public()),
	)
}

func testConfig(jwksJSON []byte) VerifierConfig {
	return VerifierConfig{
		JWKS:        jwksJSON,
		Issuer:      testIssuer,
		Audience:    testAudience,
		TenantClaim: "tenant_id",
		MaxLifetime: testMaxLife,
		ClockSkew:   testSkew,
		Now:         func() time.Time { return testNow },
	}
}

func newTestVerifier(t testing.TB) *Verifier {
	t.Helper()
	v, err := NewVerifier(testConfig(standardJWKS(t)))
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// goodClaims are valid at testNow: issued a minute ago, 3 minutes of life.
func goodClaims() map[string]any {
	return map[string]any{
		"iss":       testIssuer,
		"aud":       testAudience,
		"sub":       "user-42@acme",
		"jti":       "assertion-1",
		"iat":       testNow.Add(-time.Minute).Unix(),
		"exp":       testNow.Add(2 * time.Minute).Unix(),
		"tenant_id": "acme",
	}
}

func with(c map[string]any, kv ...any) map[string]any {
	for i := 0; i+1 < len(kv); i += 2 {
		c[kv[i].(string)] = kv[i+1]
	}
	return c
}

func without(c map[string]any, names ...string) map[string]any {
	for _, n := range names {
		delete(c, n)
	}
	return c
}

// signRaw signs payload bytes with go-jose, with kid and extra protected
// headers, in compact serialization.
func signRaw(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, payload []byte, headers map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	for k, v := range headers {
		if k == "crit" {
			opts = opts.WithCritical(v.([]string)...)
			continue
		}
		opts = opts.WithHeader(jose.HeaderKey(k), v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatalf("NewSigner(%s): %v", alg, err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatalf("CompactSerialize: %v", err)
	}
	return out
}

func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatalf("marshal claims: %v", err)
	}
	return signRaw(t, alg, key, kid, b, nil)
}

// handMade assembles a compact token from a header, a payload and raw
// signature bytes, for tokens go-jose refuses to produce.
func handMade(t testing.TB, header map[string]any, payload []byte, sig []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatalf("marshal header: %v", err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc(h) + "." + enc(payload) + "." + enc(sig)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b
}
