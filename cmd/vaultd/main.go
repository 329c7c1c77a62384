// Command vaultd is the HSM-backed OAuth token vault daemon.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/vaultd/vaultd/harden"
	"github.com/vaultd/vaultd/vaultd/daemon"
)

func main() {
	// SIGTERM/SIGINT are handled inside Run (drain, STOPPING=1); this
	// context only covers a second signal during start-up.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGQUIT)
	defer stop()
	if err := daemon.Run(ctx, os.Args[1:], os.Stdout, os.Stderr, daemon.Hooks{AfterListen: harden.Apply}); err != nil {
		fmt.Fprintf(os.Stderr, "vaultd: %v\n", err)
		os.Exit(1)
	}
}
