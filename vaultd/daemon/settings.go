package daemon

import (
	"github.com/vaultd/vaultd/harden"
	"github.com/vaultd/vaultd/vaultd/config"
)

// hardenOptions maps [harden] to the options of process hardening: the
// config file names the modes, package harden says what they mean.
func hardenOptions(cfg *config.Config) (harden.Options, error) {
	h := cfg.Harden
	mlock, err := harden.ParseMlock(h.Mlock)
	if err != nil {
		return harden.Options{}, err
	}
	seccomp, err := harden.ParseSeccomp(h.Seccomp)
	if err != nil {
		return harden.Options{}, err
	}
	return harden.Options{
		Mlock:         mlock,
		Seccomp:       seccomp,
		ExtraSyscalls: h.ExtraSyscalls,
		NoNewPrivs:    h.NoNewPrivs,
		Dumpable:      h.Dumpable,
	}, nil
}
