package oauth

import "testing"

// TestS256ChallengeRFC7636Vector is RFC 7636 Appendix B.
func TestS256ChallengeRFC7636Vector(t *testing.T) {
	const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	const want = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
	if got := s256Challenge(verifier); got != want {
		t.Fatalf("s256Challenge = %q, want %q", got, want)
	}
}
