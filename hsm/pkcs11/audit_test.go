//go:build cgo

package pkcs11_test

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/hsm"
	hsmpkcs11 "github.com/vaultd/vaultd/hsm/pkcs11"
	"github.com/vaultd/vaultd/internal/softhsmtest"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// A token set up before audit checkpoints has a KEK and no audit key:
// the keyring opens, says what is missing, and InitAuditKey adds the key
// once (the upgrade path: 'vaultctl init' run again).
func TestAuditKeyMissingThenInit(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	cfg := config(tok)
	if _, _, err := hsmpkcs11.InitKEK(t.Context(), cfg, nil); err != nil {
		t.Fatal(err)
	}
	k, err := hsmpkcs11.Open(t.Context(), cfg, nil)
	if err != nil {
		t.Fatalf("Open without an audit key: %v", err)
	}
	if _, err := k.AuditPublicKey(t.Context()); !errors.Is(err, hsm.ErrAuditKeyNotFound) {
		t.Errorf("AuditPublicKey without the key: err = %v, want ErrAuditKeyNotFound", err)
	}
	digest := sha256.Sum256([]byte("x"))
	if _, err := k.SignAudit(t.Context(), digest[:]); !errors.Is(err, hsm.ErrAuditKeyNotFound) {
		t.Errorf("SignAudit without the key: err = %v, want ErrAuditKeyNotFound", err)
	}
	_ = k.Close()

	created, err := hsmpkcs11.InitAuditKey(t.Context(), cfg, nil)
	if err != nil || !created {
		t.Fatalf("InitAuditKey = %v, %v; want true, nil", created, err)
	}
	k = openKeyring(t, cfg)
	pub1, err := k.AuditPublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = k.Close()
	created, err = hsmpkcs11.InitAuditKey(t.Context(), cfg, nil)
	if err != nil || created {
		t.Fatalf("second InitAuditKey = %v, %v; want false, nil", created, err)
	}
	k = openKeyring(t, cfg)
	pub2, err := k.AuditPublicKey(t.Context())
	if err != nil || !pub1.(*ecdsa.PublicKey).Equal(pub2) {
		t.Fatalf("public key changed across a second InitAuditKey (%v)", err)
	}
}

// The audit private key as another process sees it: EC, sign only,
// sensitive and never extractable.
func TestAuditKeyAttributes(t *testing.T) {
	tok := initToken(t)
	out := pkcs11Tool(t, tok, "--list-objects", "--type", "privkey")
	t.Logf("pkcs11-tool:\n%s", out)
	if !strings.Contains(out, "label:      "+kekLabel+"-audit") || !strings.Contains(out, "EC") {
		t.Fatalf("pkcs11-tool does not list the EC audit key:\n%s", out)
	}
	access, usage := "", ""
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "Access:"); ok {
			access = v
		}
		if v, ok := strings.CutPrefix(line, "Usage:"); ok {
			usage = strings.TrimSpace(v)
		}
	}
	if usage != "sign" {
		t.Errorf("pkcs11-tool Usage = %q, want sign only", usage)
	}
	for _, w := range []string{"sensitive", "always sensitive", "never extractable"} {
		if !strings.Contains(access, w) {
			t.Errorf("pkcs11-tool Access line %q lacks %q", access, w)
		}
	}
	if strings.Count(access, "extractable") != strings.Count(access, "never extractable") {
		t.Errorf("pkcs11-tool reports the audit key extractable: %q", access)
	}
}

// signCheckpoint signs a checkpoint with k's audit key and checks it the
// way vaultctl audit verify does; it returns the algorithm.
func signCheckpoint(t *testing.T, k *hsmpkcs11.PKCS11) string {
	t.Helper()
	pub, err := k.AuditPublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	alg, err := audit.AlgOf(pub)
	if err != nil {
		t.Fatal(err)
	}
	h := strings.Repeat("5a", 32)
	sig, err := k.SignAudit(t.Context(), audit.CheckpointDigest(alg, 3, h))
	if err != nil {
		t.Fatalf("SignAudit (%s): %v", alg, err)
	}
	c := audit.Checkpoint{Alg: alg, Seq: 3, Hash: h, Sig: sig}
	if err := audit.VerifyCheckpoint(pub, c); err != nil {
		t.Fatalf("VerifyCheckpoint (%s): %v", alg, err)
	}
	c.Seq = 4
	if audit.VerifyCheckpoint(pub, c) == nil {
		t.Fatalf("%s signature over seq 3 verified for seq 4", alg)
	}
	return alg
}

// SoftHSM has EC, so the token's choice is ES256.
func TestAuditKeyAutoIsECOnSoftHSM(t *testing.T) {
	tok := initToken(t)
	if alg := signCheckpoint(t, openKeyring(t, config(tok))); alg != audit.AlgES256 {
		t.Fatalf("alg = %s, want ES256", alg)
	}
}

// Forced RSA on SoftHSM: what a token without EC gets. The key is RSA
// 3072, sign only, sensitive, never extractable, and signs PS256.
func TestAuditKeyRSAForced(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	cfg := config(tok)
	if _, _, err := hsmpkcs11.InitKEK(t.Context(), cfg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := hsmpkcs11.InitAuditKeyAlg(t.Context(), cfg, nil, "RS256"); err == nil {
		t.Fatal("InitAuditKeyAlg took an unknown kind")
	}
	created, err := hsmpkcs11.InitAuditKeyAlg(t.Context(), cfg, nil, hsmpkcs11.AuditKeyRSA)
	if err != nil || !created {
		t.Fatalf("InitAuditKeyAlg(RSA) = %v, %v; want true, nil", created, err)
	}
	// A second init, even asking for EC, keeps the key there is.
	if created, err := hsmpkcs11.InitAuditKeyAlg(t.Context(), cfg, nil, hsmpkcs11.AuditKeyEC); err != nil || created {
		t.Fatalf("second InitAuditKeyAlg = %v, %v; want false, nil", created, err)
	}
	k := openKeyring(t, cfg)
	pub, err := k.AuditPublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok || rk.N.BitLen() != 3072 || rk.E != 65537 {
		t.Fatalf("audit public key %T, want RSA 3072 with e=65537", pub)
	}
	if alg := signCheckpoint(t, k); alg != audit.AlgPS256 {
		t.Fatalf("alg = %s, want PS256", alg)
	}
	_ = k.Close()

	out := pkcs11Tool(t, tok, "--list-objects", "--type", "privkey")
	if !strings.Contains(out, "label:      "+kekLabel+"-audit") || !strings.Contains(out, "RSA") {
		t.Fatalf("pkcs11-tool does not list the RSA audit key:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "Usage:"); ok && strings.TrimSpace(v) != "sign" {
			t.Errorf("pkcs11-tool Usage = %q, want sign only", strings.TrimSpace(v))
		}
		if v, ok := strings.CutPrefix(line, "Access:"); ok && (!strings.Contains(v, "never extractable") || !strings.Contains(v, "sensitive")) {
			t.Errorf("pkcs11-tool Access = %q, want sensitive and never extractable", v)
		}
	}
}
