package daemon

import (
	"context"
	"errors"
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

// openKeyring opens the PKCS#11 keyring [hsm] describes: the one place
// that names the backend.
func openKeyring(ctx context.Context, c *config.HSMConfig, pin secret.String, log *slog.Logger) (hsm.Keyring, error) {
	kr, err := hsmpkcs11.OpenKeyring(ctx, keyringConfig(c, pin), log)
	if errors.Is(err, hsmpkcs11.ErrNoCgo) {
		// A vaultd built without cgo never loads a module: exit as for a
		// configuration error, which systemd does not restart.
		return nil, configError(err)
	}
	if errors.Is(err, hsm.ErrMechanism) {
		// The token offers no wrapping scheme vaultd can use, or fails
		// its wrap/unwrap self-test (Open runs it before READY): only
		// another token or firmware cures that, so no restart loop.
		return nil, configError(err)
	}
	return kr, err
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
