package policy

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// jwkPeek reads what must be checked before go-jose sees a key.
type jwkPeek struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	// Private or symmetric parameters: their mere presence refuses the key.
	K    json.RawMessage `json:"k"`
	D    json.RawMessage `json:"d"`
	P    json.RawMessage `json:"p"`
	Q    json.RawMessage `json:"q"`
	DP   json.RawMessage `json:"dp"`
	DQ   json.RawMessage `json:"dq"`
	QI   json.RawMessage `json:"qi"`
	Priv json.RawMessage `json:"priv"`
	Oth  json.RawMessage `json:"oth"`
}

func parseJWKS(data []byte) ([]jose.JSONWebKey, error) {
	if len(data) > MaxJWKSBytes {
		return nil, fmt.Errorf("%w: JWKS larger than %d bytes", ErrVerifierConfig, MaxJWKSBytes)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("%w: JWKS is not a JSON JWK Set", ErrVerifierConfig)
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("%w: JWKS has no keys", ErrVerifierConfig)
	}
	kids := map[string]bool{}
	keys := make([]jose.JSONWebKey, 0, len(set.Keys))
	for i, raw := range set.Keys {
		where := fmt.Sprintf("JWKS key #%d", i+1)
		var pk jwkPeek
		if err := json.Unmarshal(raw, &pk); err != nil {
			return nil, fmt.Errorf("%w: %s: not a JWK object", ErrVerifierConfig, where)
		}
		if pk.Kid != "" {
			where = fmt.Sprintf("JWKS key #%d (kid %q)", i+1, pk.Kid)
		}
		switch pk.Kty {
		case "RSA", "EC", "OKP":
		case "oct":
			return nil, fmt.Errorf("%w: %s: symmetric (oct) keys are not allowed", ErrVerifierConfig, where)
		default:
			return nil, fmt.Errorf("%w: %s: unsupported kty %q", ErrVerifierConfig, where, pk.Kty)
		}
		// Message names no value: these fields are secret.
		if pk.K != nil || pk.D != nil || pk.P != nil || pk.Q != nil || pk.DP != nil || pk.DQ != nil || pk.QI != nil || pk.Priv != nil || pk.Oth != nil {
			return nil, fmt.Errorf("%w: %s contains private key material; publish only public keys", ErrVerifierConfig, where)
		}
		if pk.Use != "" && pk.Use != "sig" {
			return nil, fmt.Errorf("%w: %s: use %q is not \"sig\"", ErrVerifierConfig, where, pk.Use)
		}
		if pk.Kty == "OKP" && pk.Crv != "Ed25519" {
			return nil, fmt.Errorf("%w: %s: OKP curve %q unsupported (only Ed25519)", ErrVerifierConfig, where, pk.Crv)
		}
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			// Only public parameters reach here, so the library's message
			// is safe to show.
			return nil, fmt.Errorf("%w: %s: %v", ErrVerifierConfig, where, err)
		}
		if !k.IsPublic() || !k.Valid() {
			return nil, fmt.Errorf("%w: %s is not a valid public key", ErrVerifierConfig, where)
		}
		switch pub := k.Key.(type) {
		case *rsa.PublicKey:
			if pub.N.BitLen() < MinRSABits {
				return nil, fmt.Errorf("%w: %s: RSA key of %d bits is below %d", ErrVerifierConfig, where, pub.N.BitLen(), MinRSABits)
			}
		case *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			return nil, fmt.Errorf("%w: %s: unsupported key type", ErrVerifierConfig, where)
		}
		if k.Algorithm != "" {
			alg := jose.SignatureAlgorithm(k.Algorithm)
			if !algAllowed(alg) {
				return nil, fmt.Errorf("%w: %s: alg %q not allowed", ErrVerifierConfig, where, k.Algorithm)
			}
			if !keyFits(k.Key, alg) {
				return nil, fmt.Errorf("%w: %s: alg %q does not fit the key", ErrVerifierConfig, where, k.Algorithm)
			}
		}
		if k.KeyID != "" {
			if kids[k.KeyID] {
				return nil, fmt.Errorf("%w: %s: kid used twice", ErrVerifierConfig, where)
			}
			kids[k.KeyID] = true
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func algAllowed(alg jose.SignatureAlgorithm) bool {
	for _, a := range allowedAlgs {
		if a == alg {
			return true
		}
	}
	return false
}

// keyFits reports whether alg can be verified with key: the algorithm
// family must match the key type, and for ECDSA the curve.
func keyFits(key any, alg jose.SignatureAlgorithm) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		switch alg {
		case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case jose.ES256:
			return k.Curve == elliptic.P256()
		case jose.ES384:
			return k.Curve == elliptic.P384()
		case jose.ES512:
			return k.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == jose.EdDSA
	}
	return false
}

// fits also honours the JWK's own alg, when it declares one.
func fits(k jose.JSONWebKey, alg jose.SignatureAlgorithm) bool {
	if k.Algorithm != "" && jose.SignatureAlgorithm(k.Algorithm) != alg {
		return false
	}
	return keyFits(k.Key, alg)
}
