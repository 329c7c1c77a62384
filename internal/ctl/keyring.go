package ctl

import (
	"context"
	"crypto"
	"fmt"
	"log/slog"

	"github.com/vaultd/vaultd/hsm"
	hsmpkcs11 "github.com/vaultd/vaultd/hsm/pkcs11"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/config"
)

// keyringConfig maps [hsm] and the PIN to the PKCS#11 backend's Config. It
// lives in the wiring, not in vaultd/config, so that config stays a leaf.
func keyringConfig(c *config.HSMConfig, pin secret.String) hsmpkcs11.Config {
	return hsmpkcs11.Config{Module: c.Module, TokenLabel: c.TokenLabel, PIN: pin, KEKLabel: c.KEKLabel, MaxSessions: c.MaxSessions,
		ForceScheme: wrapScheme(c.WrapScheme)}
}

// initKEK creates KEK version 1 unless one exists ('vaultctl init').
func initKEK(ctx context.Context, c *config.HSMConfig, pin secret.String, log *slog.Logger) (version uint32, created bool, err error) {
	return hsmpkcs11.InitKEK(ctx, keyringConfig(c, pin), log)
}

// initAuditKey creates the audit signing key unless it exists ('vaultctl
// init').
func initAuditKey(ctx context.Context, c *config.HSMConfig, pin secret.String, log *slog.Logger) (created bool, err error) {
	return hsmpkcs11.InitAuditKey(ctx, keyringConfig(c, pin), log)
}

// openKeyring opens the PKCS#11 keyring [hsm] describes: the one place
// that names the backend.
func openKeyring(ctx context.Context, c *config.HSMConfig, pin secret.String, log *slog.Logger) (hsm.Keyring, error) {
	return hsmpkcs11.OpenKeyring(ctx, keyringConfig(c, pin), log)
}

// keyringScheme opens the keyring, which negotiates its wrapping scheme
// with the token and runs a wrap/unwrap round trip (the KEK's and a
// tenant-like key's), and names the scheme.
func keyringScheme(ctx context.Context, c *config.HSMConfig, pin secret.String, log *slog.Logger) (hsm.Scheme, error) {
	kr, err := hsmpkcs11.Open(ctx, keyringConfig(c, pin), log)
	if err != nil {
		return 0, err
	}
	defer func() { _ = kr.Close() }()
	return kr.Scheme(), nil
}

// rotateKEK adds the next KEK version, if the backend can.
func rotateKEK(ctx context.Context, kr hsm.Keyring) (uint32, error) {
	r, ok := kr.(hsm.KEKRotator)
	if !ok {
		return 0, fmt.Errorf("kek-rotate: the %T keyring cannot rotate its KEK", kr)
	}
	return r.RotateKEK(ctx)
}

// kekInfo lists the KEK versions and their attributes, if the backend can.
func kekInfo(ctx context.Context, kr hsm.Keyring) ([]hsm.KEKInfo, error) {
	r, ok := kr.(hsm.KEKInspector)
	if !ok {
		return nil, fmt.Errorf("kek-info: the %T keyring cannot list its KEKs", kr)
	}
	return r.KEKInfo(ctx)
}

// auditPublicKey is the audit checkpoint public key, if the backend signs.
func auditPublicKey(ctx context.Context, kr hsm.Keyring) (crypto.PublicKey, error) {
	s, ok := kr.(hsm.AuditSigner)
	if !ok {
		return nil, fmt.Errorf("audit pubkey: the %T keyring cannot sign audit checkpoints", kr)
	}
	return s.AuditPublicKey(ctx)
}

// wrapScheme maps [hsm] wrap_scheme (checked by config) to the scheme the
// backend pins; "" negotiates.
func wrapScheme(name string) hsm.Scheme {
	switch name {
	case config.WrapSchemeGCM:
		return hsm.SchemeAESGCM
	case config.WrapSchemeKWP:
		return hsm.SchemeAESKWP
	case config.WrapSchemeCBCHMAC:
		return hsm.SchemeAESCBCHMAC
	}
	return 0
}
