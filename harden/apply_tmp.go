package harden

import (
	"context"
	"log/slog"

	"github.com/vaultd/vaultd/vaultd/config"
)

// apply is replaced by the full implementation (prctl, rlimits, mlock,
// seccomp) in its own change.
func apply(ctx context.Context, cfg *config.Config, log *slog.Logger) error { return nil }
