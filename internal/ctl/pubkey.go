package ctl

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vaultd/vaultd/vaultd/audit"
)

// cmdAuditPubkey prints the audit checkpoint public key as PEM (SPKI,
// "PUBLIC KEY"): what `audit verify -pubkey` takes. Kept off-host, it lets
// an auditor verify checkpoints without trusting the host.
func cmdAuditPubkey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	kr, _, err := localKeyring(ctx, "audit pubkey", args, stderr)
	if err != nil {
		return err
	}
	defer kr.Close()
	pub, err := auditPublicKey(ctx, kr)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("audit pubkey: %w", err)
	}
	return pem.Encode(stdout, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// readPubkey reads a PEM "PUBLIC KEY" file (as `audit pubkey` prints it)
// and checks it is a key checkpoints are signed with.
func readPubkey(name string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("-pubkey " + name + ": not a PEM \"PUBLIC KEY\" (the output of `vaultctl audit pubkey`)")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("-pubkey %s: %w", name, err)
	}
	if _, err := audit.AlgOf(pub); err != nil {
		return nil, fmt.Errorf("-pubkey %s: %w", name, err)
	}
	return pub, nil
}
