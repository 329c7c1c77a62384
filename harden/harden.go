// Package harden applies process hardening once vaultd's HSM session, store
// and listeners are up and before the first request is served.
package harden

import (
	"context"
	"log/slog"

	"github.com/vaultd/vaultd/vaultd/config"
)

// Apply hardens the running process as [harden] says.
func Apply(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	return apply(ctx, cfg, log)
}
