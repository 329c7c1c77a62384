package daemon

import (
	"context"
	"log/slog"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/config"
)

// keyringConfig maps [hsm] and the PIN to the backend's Config. It lives in
// the wiring, not in vaultd/config, so that config stays a leaf package.
func keyringConfig(c *config.HSMConfig, pin secret.String) hsm.Config {
	return hsm.Config{
		Module:      c.Module,
		TokenLabel:  c.TokenLabel,
		PIN:         pin,
		KEKLabel:    c.KEKLabel,
		MaxSessions: c.MaxSessions,
	}
}

// openKeyring opens the keyring [hsm] describes.
func openKeyring(ctx context.Context, c *config.HSMConfig, pin secret.String, log *slog.Logger) (hsm.Keyring, error) {
	kr, err := hsm.Open(ctx, keyringConfig(c, pin), log)
	if err != nil {
		return nil, err // not kr: a nil *PKCS11 in an interface is not nil
	}
	return kr, nil
}

// reloadKEKs re-reads the KEK versions (new ones from `vaultctl
// kek-rotate`) when the backend can; one that cannot has nothing to re-read.
func reloadKEKs(ctx context.Context, kr hsm.Keyring) error {
	r, ok := kr.(hsm.Reloader)
	if !ok {
		return nil
	}
	return r.Reload(ctx)
}
