package ctl

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/hsm/hsmtest"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// rsaSigner signs checkpoints as the PKCS#11 backend does on a token
// without EC (openCryptoki): RSA-PSS, SHA-256, MGF1-SHA256, salt 32.
type rsaSigner struct{ key *rsa.PrivateKey }

func (s rsaSigner) SignAudit(_ context.Context, digest []byte) ([]byte, error) {
	return rsa.SignPSS(rand.Reader, s.key, crypto.SHA256, digest, &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256})
}

func (s rsaSigner) AuditPublicKey(context.Context) (crypto.PublicKey, error) {
	return &s.key.PublicKey, nil
}

func newRSASigner(t *testing.T, bits int) rsaSigner {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return rsaSigner{k}
}

// A PS256 trail verifies under its RSA key's PEM, as an ES256 one does
// under its EC key's; the wrong key, of either kind, is caught at the
// first checkpoint.
func TestAuditVerifyPubkeyPS256(t *testing.T) {
	signer := newRSASigner(t, audit.MinRSABits)
	lines, pub := signedExport(t, signer)
	n := len(lines)
	if !strings.Contains(lines[4], "alg=PS256 seq=4 ") {
		t.Fatalf("checkpoint line does not say PS256: %s", lines[4])
	}
	file := writeLines(t, lines, 0, n)
	out, err := runVerify("-pubkey", pub, file)
	wantVerifyOK(t, out, err, n, n)
	if !strings.Contains(out, "ok: 2 signed checkpoints verify, the last at seq 10") {
		t.Fatalf("output does not report the checkpoints: %q", out)
	}

	out, err = runVerify("-pubkey", pubkeyFile(t, newRSASigner(t, audit.MinRSABits)), file)
	wantVerifyFails(t, out, err, "chain broken at seq 5", "signature does not verify")
	out, err = runVerify("-pubkey", pubkeyFile(t, hsmtest.NewFake()), file)
	wantVerifyFails(t, out, err, "chain broken at seq 5", "alg PS256")

	tampered := writeLines(t, rewriteFrom(t, lines, 9, func(ev *audit.Event) {
		c, err := audit.ParseCheckpoint(ev.Detail)
		if err != nil {
			t.Fatal(err)
		}
		c.Sig[len(c.Sig)-2] ^= 1
		ev.Detail = c.String()
	}), 0, n)
	out, err = runVerify("-pubkey", pub, tampered)
	wantVerifyFails(t, out, err, "chain broken at seq 10", "signature does not verify")
}

// An RSA key below 3072 bits is refused as a -pubkey before any line is
// read.
func TestAuditVerifyPubkeySmallRSA(t *testing.T) {
	small := newRSASigner(t, 2048)
	der, err := x509.MarshalPKIXPublicKey(&small.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "small.pub")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readPubkey(f); err == nil || !strings.Contains(err.Error(), "3072") {
		t.Fatalf("readPubkey(RSA 2048) = %v, want a refusal naming 3072 bits", err)
	}
}
