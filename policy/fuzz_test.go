package policy

import (
	"errors"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/vaultd/vaultd/internal/ids"
)

// refusalMessages are the only error texts Verify may produce: a fixed
// prefix and a fixed reason, so no error can echo input.
var refusalMessages = func() map[string]bool {
	m := map[string]bool{}
	for _, r := range []string{
		reasonTooLarge, reasonEmpty, reasonNotCompact, reasonMalformed, reasonAlg, reasonCrit,
		reasonHeader, reasonUnknownKID, reasonKeyMismatch, reasonNoKey, reasonBadSignature,
		reasonClaims, reasonIssuer, reasonAudience, reasonNoExp, reasonExpired, reasonNoIat,
		reasonIatFuture, reasonLifetime, reasonExpBeforeIat, reasonNotYetValid, reasonTenantMissing,
		reasonTenantType, reasonTenantInvalid, reasonSubject, reasonNoVerifier,
	} {
		m[ErrInvalidAssertion.Error()+": "+r] = true
	}
	return m
}()

func checkRefusal(t *testing.T, err error) {
	t.Helper()
	var ae *AssertionError
	if !errors.Is(err, ErrInvalidAssertion) || !errors.As(err, &ae) {
		t.Fatalf("error %v is not an *AssertionError", err)
	}
	if !refusalMessages[err.Error()] {
		t.Fatalf("unexpected error text %q", err.Error())
	}
}

// FuzzVerify feeds arbitrary strings to a verifier holding keys the fuzzer
// cannot sign with: nothing may panic, and nothing may be accepted.
// Committed seeds (testdata/fuzz/FuzzVerify) are tokens of every refused
// shape: alg none, HMAC with public key bytes, foreign keys, JSON
// serialization, JWE, crit headers.
func FuzzVerify(f *testing.F) {
	k := testKeys()
	good := mustJSON(f, goodClaims())
	for _, s := range []string{
		"", ".", "..", "a.b.c", "not a token",
		sign(f, jose.RS256, k.rsaOther, "rsa1", goodClaims()),
		sign(f, jose.ES384, k.ec384, "ec256", goodClaims()),
		sign(f, jose.EdDSA, k.edOther, "", goodClaims()),
		handMade(f, map[string]any{"alg": "none"}, good, nil),
	} {
		f.Add(s)
	}
	v := newTestVerifier(f)
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.Verify(tok)
		if err == nil {
			t.Fatalf("accepted a token the fuzzer cannot have signed: %+v", c)
		}
		checkRefusal(t, err)
	})
}

// FuzzVerifyClaims signs arbitrary payloads with a trusted key, so the
// claims checks see everything: nothing may panic, and anything accepted
// must satisfy every claim rule.
func FuzzVerifyClaims(f *testing.F) {
	for _, c := range []map[string]any{
		goodClaims(),
		with(goodClaims(), "aud", []string{"x", testAudience}),
		with(goodClaims(), "tenant_id", 7),
		with(goodClaims(), "exp", 1e300),
		with(goodClaims(), "nbf", testNow.Unix()+10),
		without(goodClaims(), "iat"),
	} {
		f.Add(mustJSON(f, c))
	}
	f.Add([]byte(`{"tenant_id":"a","tenant_id":"b"}`))
	f.Add([]byte(`[]`))
	k := testKeys()
	v := newTestVerifier(f)
	f.Fuzz(func(t *testing.T, payload []byte) {
		tok := signRaw(t, jose.EdDSA, k.ed, "ed1", payload, nil)
		c, err := v.Verify(tok)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		now := testNow
		switch {
		case c.Issuer != testIssuer:
			t.Fatalf("accepted issuer %q", c.Issuer)
		case !ids.Valid(c.Tenant):
			t.Fatalf("accepted tenant %q", c.Tenant)
		case c.IssuedAt.After(now.Add(testSkew)):
			t.Fatalf("accepted iat in the future: %v", c.IssuedAt)
		case !now.Before(c.Expiry.Add(testSkew)):
			t.Fatalf("accepted expired: %v", c.Expiry)
		case !c.Expiry.After(c.IssuedAt) || c.Expiry.Sub(c.IssuedAt) > testMaxLife:
			t.Fatalf("accepted lifetime %v", c.Expiry.Sub(c.IssuedAt))
		case len(c.Subject) > maxSubjectBytes || !printable(c.Subject):
			t.Fatalf("accepted sub %q", c.Subject)
		}
	})
}
