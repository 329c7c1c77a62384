package pkcs11

import (
	"context"
	"log/slog"

	"github.com/vaultd/vaultd/hsm"
)

// OpenKeyring is Open for callers that hold the backend as the hsm.Keyring
// contract: an error never comes with a typed nil inside the interface.
func OpenKeyring(ctx context.Context, cfg Config, logger *slog.Logger) (hsm.Keyring, error) {
	p, err := Open(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	return p, nil
}
