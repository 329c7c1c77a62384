package audit

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"sync"
	"testing"

	"github.com/vaultd/vaultd/hsm/hsmtest"
)

// rsaSigner is an hsm.AuditSigner with an RSA key, signing as the PKCS#11
// backend does on a token without EC: PSS over the digest, SHA-256,
// MGF1-SHA256, 32-byte salt.
type rsaSigner struct{ key *rsa.PrivateKey }

func (s rsaSigner) SignAudit(_ context.Context, digest []byte) ([]byte, error) {
	return rsa.SignPSS(rand.Reader, s.key, crypto.SHA256, digest, &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256})
}

func (s rsaSigner) AuditPublicKey(context.Context) (crypto.PublicKey, error) {
	return &s.key.PublicKey, nil
}

var (
	rsaKeysOnce sync.Once
	rsaKeys     [2]*rsa.PrivateKey // 3072 bits: generated once, they are slow
)

func newRSASigners(t *testing.T) (rsaSigner, rsaSigner) {
	t.Helper()
	rsaKeysOnce.Do(func() {
		for i := range rsaKeys {
			k, err := rsa.GenerateKey(rand.Reader, MinRSABits)
			if err != nil {
				panic(err)
			}
			rsaKeys[i] = k
		}
	})
	return rsaSigner{rsaKeys[0]}, rsaSigner{rsaKeys[1]}
}

func TestAlgOf(t *testing.T) {
	a, _ := newRSASigners(t)
	small, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fake := hsmtest.NewFake()
	ec, err := fake.AuditPublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  crypto.PublicKey
		want string
	}{
		{"P-256", ec, AlgES256},
		{"RSA 3072", &a.key.PublicKey, AlgPS256},
		{"RSA 2048", &small.PublicKey, ""},
		{"P-384", &p384.PublicKey, ""},
		{"bare RSA", &rsa.PublicKey{}, ""},
		{"nil", nil, ""},
	} {
		got, err := AlgOf(tc.key)
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("AlgOf(%s) = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

// The checkpoints of an RSA key say PS256 and verify under its public key
// only; an ES256 claim, a flipped bit or another RSA key is caught.
func TestCheckpointPS256(t *testing.T) {
	signer, other := newRSASigners(t)
	_, lines := signedTrail(t, signer)
	if !strings.Contains(string(lines[5]), `"detail":"alg=PS256 seq=5 `) {
		t.Fatalf("checkpoint line does not name PS256: %s", lines[5])
	}
	res, err := verifyWith(&signer.key.PublicKey, lines)
	if err != nil || res.Checkpoints != 2 {
		t.Fatalf("verify = %+v, %v; want 2 checkpoints", res, err)
	}
	_, err = verifyWith(&other.key.PublicKey, lines)
	wantVerifierError(t, err, 6, "signature does not verify")

	ec, err := hsmtest.NewFake().AuditPublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, err = verifyWith(ec, lines)
	wantVerifierError(t, err, 6, "alg PS256")

	tampered := rewrite(t, lines, 11, func(ev *Event) {
		c, err := ParseCheckpoint(ev.Detail)
		if err != nil {
			t.Fatal(err)
		}
		c.Sig[100] ^= 0x01
		ev.Detail = c.String()
	})
	_, err = verifyWith(&signer.key.PublicKey, tampered)
	wantVerifierError(t, err, 12, "signature does not verify")

	renamed := rewrite(t, lines, 5, func(ev *Event) { ev.Detail = strings.Replace(ev.Detail, "alg=PS256", "alg=ES256", 1) })
	_, err = verifyWith(&signer.key.PublicKey, renamed)
	wantVerifierError(t, err, 6, "alg ES256")
}

// A PS256 signature is bound to its algorithm name: the same bytes under
// the ES256 digest do not verify (CheckpointDigest hashes the name in).
func TestPS256SignatureBoundToAlg(t *testing.T) {
	signer, _ := newRSASigners(t)
	h := strings.Repeat("0f", 32)
	sig, err := signer.SignAudit(t.Context(), CheckpointDigest(AlgPS256, 9, h))
	if err != nil {
		t.Fatal(err)
	}
	good := Checkpoint{Alg: AlgPS256, Seq: 9, Hash: h, Sig: sig}
	if err := VerifyCheckpoint(&signer.key.PublicKey, good); err != nil {
		t.Fatalf("VerifyCheckpoint: %v", err)
	}
	again, err := ParseCheckpoint(good.String())
	if err != nil || VerifyCheckpoint(&signer.key.PublicKey, again) != nil {
		t.Fatalf("a PS256 detail does not survive its text form: %v", err)
	}
	if len(sig) != MinRSABits/8 {
		t.Fatalf("signature of %d bytes, want %d", len(sig), MinRSABits/8)
	}
	moved := good
	moved.Seq = 10
	if err := VerifyCheckpoint(&signer.key.PublicKey, moved); err == nil {
		t.Fatal("a signature over seq 9 verified for seq 10")
	}
}
