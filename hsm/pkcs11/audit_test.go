//go:build cgo

package pkcs11_test

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/hsm"
	hsmpkcs11 "github.com/vaultd/vaultd/hsm/pkcs11"
	"github.com/vaultd/vaultd/internal/softhsmtest"
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
