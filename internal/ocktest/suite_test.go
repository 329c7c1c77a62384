//go:build cgo

package ocktest_test

import (
	"crypto/rsa"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/hsm/hsmtest"
	hsmpkcs11 "github.com/vaultd/vaultd/hsm/pkcs11"
	"github.com/vaultd/vaultd/internal/ocktest"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// The backend against openCryptoki's soft token: no AES-GCM, no key wrap,
// no EC. These tests are what says vaultd runs on a token other than
// SoftHSM. They share one token, each with its own KEK label.

func config(t *testing.T) hsmpkcs11.Config {
	tok := ocktest.Need(t)
	return hsmpkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: secret.NewString(tok.PIN), KEKLabel: tok.KeyLabel("kek")}
}

func initKEK(t *testing.T, cfg hsmpkcs11.Config) {
	t.Helper()
	v, created, err := hsmpkcs11.InitKEK(t.Context(), cfg, nil)
	if err != nil || v != 1 || !created {
		t.Fatalf("InitKEK = %d, %v, %v; want 1, true, nil", v, created, err)
	}
}

func TestTokenIsOpenCryptoki(t *testing.T) {
	tok := ocktest.Need(t)
	if !strings.Contains(tok.Module, "opencryptoki") {
		t.Fatalf("module %s is not openCryptoki's", tok.Module)
	}
}

func TestOCKKeyringSuite(t *testing.T) {
	cfg := config(t)
	initKEK(t, cfg)
	if _, err := hsmpkcs11.InitAuditKey(t.Context(), cfg, nil); err != nil {
		t.Fatalf("InitAuditKey: %v", err)
	}
	hsmtest.RunKeyringSuite(t, func(t *testing.T) hsm.Keyring {
		k, err := hsmpkcs11.Open(t.Context(), cfg, nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = k.Close() })
		return k
	})
}

// Without EC the audit key is RSA 3072 and checkpoints are PS256; they
// verify the way vaultctl audit verify checks them.
func TestOCKAuditKeyIsRSA(t *testing.T) {
	cfg := config(t)
	initKEK(t, cfg)
	if _, err := hsmpkcs11.InitAuditKeyAlg(t.Context(), cfg, nil, hsmpkcs11.AuditKeyEC); err == nil {
		t.Fatal("an EC audit key was made on a token without EC")
	}
	created, err := hsmpkcs11.InitAuditKey(t.Context(), cfg, nil)
	if err != nil || !created {
		t.Fatalf("InitAuditKey = %v, %v; want true, nil", created, err)
	}
	k, err := hsmpkcs11.Open(t.Context(), cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() { _ = k.Close() }()
	pub, err := k.AuditPublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rk, ok := pub.(*rsa.PublicKey); !ok || rk.N.BitLen() != 3072 {
		t.Fatalf("audit key %T, want RSA 3072", pub)
	}
	alg, err := audit.AlgOf(pub)
	if err != nil || alg != audit.AlgPS256 {
		t.Fatalf("AlgOf = %q, %v; want PS256", alg, err)
	}
	h := strings.Repeat("a5", 32)
	sig, err := k.SignAudit(t.Context(), audit.CheckpointDigest(alg, 7, h))
	if err != nil {
		t.Fatalf("SignAudit: %v", err)
	}
	if err := audit.VerifyCheckpoint(pub, audit.Checkpoint{Alg: alg, Seq: 7, Hash: h, Sig: sig}); err != nil {
		t.Fatalf("VerifyCheckpoint: %v", err)
	}
}
