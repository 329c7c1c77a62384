// Command vaultd is the HSM-backed OAuth token vault daemon.
//
// Exit status: 0 after a clean shutdown (or -h); 77 when the HSM refused
// the PIN; 78 when the configuration or a file it names is unusable; 1 for
// everything else. vaultd.service does not restart on 77 and 78
// (RestartPreventExitStatus=), see daemon.ExitCode.
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
	err := daemon.Run(ctx, os.Args[1:], os.Stdout, os.Stderr, daemon.Hooks{AfterListen: harden.Apply})
	stop()
	code := daemon.ExitCode(err)
	if err != nil && code != daemon.ExitOK {
		// The one line that names the problem (never a secret: every
		// error on this path is built not to carry one).
		fmt.Fprintf(os.Stderr, "vaultd: %v\n", err)
	}
	os.Exit(code)
}
