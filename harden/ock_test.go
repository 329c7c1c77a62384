package harden

import (
	"testing"

	"github.com/vaultd/vaultd/internal/ocktest"
)

// TestEnforceOpenCryptoki: the production filter with openCryptoki's
// module loaded and logged in before hardening. Its token lives in
// pkcsslotd and in files under /var/lib/opencryptoki; after start-up the
// module signs, rotates and reloads over the socket and files the
// built-in list already allows. Wrapping runs too: it passes once the
// backend negotiates a scheme the soft token has (no AES-GCM there).
func TestEnforceOpenCryptoki(t *testing.T) {
	tok := ocktest.Need(t)
	o := child(t, "enforce-ock", childOpts{mlock: MlockRequired, seccomp: SeccompEnforce, hsmEnv: []string{
		envModule + "=" + tok.Module, envToken + "=" + tok.Label, envPIN + "=" + tok.PIN,
		envKEK + "=" + tok.KeyLabel("hk"), envSign + "=1",
	}})
	want(t, o, map[string]string{
		"apply_err":      "",
		"seccomp_status": "2",
		"hsm_sign":       "",
		"hsm":            "",
		"hsm_close":      "",
		"mount":          "EPERM",
		"execve":         "EPERM",
	})
	allThreads(t, o, "threads", "2/1")
}
