package daemon

import (
	"errors"
	"flag"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/vaultd/config"
)

// Exit statuses of vaultd (sysexits.h numbers). systemd restarts the
// service on ExitFailure only: vaultd.service has
// RestartPreventExitStatus=77 78, because restarting cannot cure a
// rejected PIN or a bad configuration, and retrying a wrong PIN every few
// seconds locks the PIN out (or zeroises the token) on real HSMs.
const (
	ExitOK         = 0
	ExitFailure    = 1  // anything a later start may not meet: HSM unreachable, store locked, port taken
	ExitCredential = 77 // EX_NOPERM: the HSM refused the PIN (wrong, too long, locked, expired)
	ExitConfig     = 78 // EX_CONFIG: the configuration or a file it names is unusable
)

// ErrConfig marks a start-up failure that only an operator can fix: the
// configuration, a file it names (TLS material, JWKS, provider CA) or the
// HSM set-up it describes (no such token, no KEK). config.ErrInvalid and
// the hsm sentinels listed in ExitCode count as such without it.
var ErrConfig = errors.New("configuration error")

// configError marks err as ErrConfig while keeping its message (the one
// start-up line) and its own chain for errors.Is/As.
func configError(err error) error {
	if err == nil {
		return nil
	}
	return &classified{kind: ErrConfig, err: err}
}

type classified struct {
	kind error
	err  error
}

func (c *classified) Error() string   { return c.err.Error() }
func (c *classified) Unwrap() []error { return []error{c.kind, c.err} }

// ExitCode is the exit status for an error returned by Run. This is the
// one place start-up failures are classified; it goes by sentinel
// (errors.Is), never by message text.
func ExitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	// A rejected PIN is checked first: whatever else wraps it, it must
	// never be retried automatically.
	case errors.Is(err, hsm.ErrWrongPIN), errors.Is(err, hsm.ErrPINLocked):
		return ExitCredential
	case errors.Is(err, ErrConfig), errors.Is(err, config.ErrInvalid),
		// The token label names no token, `vaultctl init` was not run
		// for kek_label, or the objects under it break the KEK policy:
		// the HSM answered, and will answer the same next time.
		errors.Is(err, hsm.ErrTokenNotFound), errors.Is(err, hsm.ErrKEKNotFound), errors.Is(err, hsm.ErrKEKInvalid),
		// No audit signing key (an installation from before signed
		// checkpoints: 'vaultctl init' adds it), or a bad one.
		errors.Is(err, hsm.ErrAuditKeyNotFound), errors.Is(err, hsm.ErrAuditKeyInvalid):
		return ExitConfig
	}
	// Including hsm.ErrUnavailable and hsm.ErrModule (a network HSM's
	// client library can fail to initialise while its server is away).
	return ExitFailure
}
