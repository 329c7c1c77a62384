package daemon

import (
	"errors"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/harden"
	"github.com/vaultd/vaultd/vaultd/config"
)

// settingsBase is a minimal config for ModeSyntax (no file is touched).
const settingsBase = `[server]
listen    = "127.0.0.1:8443"
tls_cert  = "tls/server.crt"
tls_key   = "tls/server.key"
client_ca = "tls/client-ca.crt"

[hsm]
module      = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "vaultd"
pin_file    = "hsm.pin"
kek_label   = "vaultd-kek"

[storage]
path = "data/vault.db"
`

func parseSettings(t *testing.T, doc string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(doc), t.TempDir(), config.ModeSyntax)
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	return cfg
}

// checkConfigErr: a refusal from the wiring reads and classifies like one
// from config.Load: one line, "config <file>: line N: key: reason", exit 78.
func checkConfigErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error containing %q, got nil", want)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "config <input>: ") || strings.ContainsAny(msg, "\r\n") || !strings.Contains(msg, want) {
		t.Errorf("got  %q\nwant one line starting \"config <input>: \" and containing %q", msg, want)
	}
	if !errors.Is(err, config.ErrInvalid) || ExitCode(configError(err)) != ExitConfig || ExitCode(err) != ExitConfig {
		t.Errorf("%q is not a configuration error (exit %d)", msg, ExitCode(err))
	}
}

func TestHardenOptions(t *testing.T) {
	o, err := hardenOptions(parseSettings(t, settingsBase))
	if err != nil {
		t.Fatal(err)
	}
	if o.Mlock != harden.MlockRequired || o.Seccomp != harden.SeccompEnforce || len(o.ExtraSyscalls) != 0 || !o.NoNewPrivs || o.Dumpable {
		t.Errorf("defaults: %+v", o)
	}
	o, err = hardenOptions(parseSettings(t, settingsBase+"[harden]\nmlock = \"best-effort\"\nseccomp = \"log\"\n"+
		"extra_syscalls = [\"ioctl\"]\nno_new_privs = false\ndumpable = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if o.Mlock != harden.MlockBestEffort || o.Seccomp != harden.SeccompLog || len(o.ExtraSyscalls) != 1 || o.ExtraSyscalls[0] != "ioctl" ||
		o.NoNewPrivs || !o.Dumpable {
		t.Errorf("set: %+v", o)
	}
}

func TestHardenOptionsRefusals(t *testing.T) {
	for _, tc := range []struct{ name, harden, want string }{
		{"mlock", `mlock = "sometimes"`, `line 16: harden.mlock: not allowed (want "required", "best-effort" or "off")`},
		{"seccomp", `seccomp = "strict"`, `line 16: harden.seccomp: not allowed (want "enforce", "log" or "off")`},
		{"extra_syscalls name", `extra_syscalls = ["read", "Bad Name"]`, `line 16: harden.extra_syscalls[1]: not a syscall name`},
		{"extra_syscalls unknown", `extra_syscalls = ["not_a_syscall_xyz"]`, `line 16: harden.extra_syscalls[0]: not a syscall on `},
		{"extra_syscalls twice", `extra_syscalls = ["ioctl", "ioctl"]`, `line 16: harden.extra_syscalls[1]: listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := hardenOptions(parseSettings(t, settingsBase+"[harden]\n"+tc.harden+"\n"))
			checkConfigErr(t, err, tc.want)
			if !errors.Is(err, harden.ErrSyscall) && !errors.Is(err, harden.ErrConfig) {
				t.Errorf("%v matches neither harden.ErrSyscall nor harden.ErrConfig", err)
			}
		})
	}
}
