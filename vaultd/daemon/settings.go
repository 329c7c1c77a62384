package daemon

import (
	"fmt"

	"github.com/vaultd/vaultd/harden"
	"github.com/vaultd/vaultd/vaultd/config"
)

// The config file spells some values in other packages' vocabularies.
// vaultd/config keeps them as written; here each is read by the package
// that owns its meaning, and a refusal becomes a config error naming the
// key and its line (config.KeyError), exactly as if Load had found it.

// hardenOptions maps [harden] to the options of process hardening: the
// modes and the extra syscalls (checked against this machine's syscall
// table now, so a typo stops start-up with its line number).
func hardenOptions(cfg *config.Config) (harden.Options, error) {
	h := cfg.Harden
	mlock, err := harden.ParseMlock(h.Mlock)
	if err != nil {
		return harden.Options{}, cfg.KeyError("harden.mlock", err)
	}
	seccomp, err := harden.ParseSeccomp(h.Seccomp)
	if err != nil {
		return harden.Options{}, cfg.KeyError("harden.seccomp", err)
	}
	if i, err := harden.CheckSyscalls(h.ExtraSyscalls); err != nil {
		return harden.Options{}, cfg.KeyError(fmt.Sprintf("harden.extra_syscalls[%d]", i), err)
	}
	return harden.Options{
		Mlock:         mlock,
		Seccomp:       seccomp,
		ExtraSyscalls: h.ExtraSyscalls,
		NoNewPrivs:    h.NoNewPrivs,
		Dumpable:      h.Dumpable,
	}, nil
}
