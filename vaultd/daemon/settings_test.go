package daemon

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/internal/settings"
	"github.com/vaultd/vaultd/vaultd/config"
)

// TestSettingsRefusalsExitConfig: a value internal/settings refuses stops
// vaultd like any config error, with its one line and exit code 78, from
// each place the daemon reads one (start-up's hardening options, the
// identity, the providers).
func TestSettingsRefusalsExitConfig(t *testing.T) {
	const base = "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"s.crt\"\ntls_key = \"s.key\"\nclient_ca = \"ca.crt\"\n" +
		"[hsm]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin_file = \"p\"\nkek_label = \"k\"\n[storage]\npath = \"db\"\n"
	parse := func(doc string) *config.Config {
		cfg, err := config.Parse([]byte(base+doc), t.TempDir(), config.ModeSyntax)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	_, hardenErr := settings.Harden(parse("[harden]\nextra_syscalls = [\"not_a_syscall_xyz\"]\n"))
	_, identErr := buildIdentity(parse("[[principals]]\nsubject_cn = \"x\"\nroles = [\"admin\"]\n"))
	_, _, provErr := buildProviders(parse("[providers.p]\ntoken_url = \"https://t/\"\napi_base_url = \"https://a/\"\n"+
		"client_id = \"c\"\nclient_secret_file = \"s\"\nauth_style = \"jwt\"\n"), slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		err  error
		want string
	}{
		{hardenErr, "line 14: harden.extra_syscalls[0]: not a syscall on "},
		{identErr, "line 15: principals[0].roles[0]: not a role"},
		{provErr, "line 18: providers.p.auth_style: not allowed"},
	} {
		if tc.err == nil || !strings.HasPrefix(tc.err.Error(), "config <input>: ") || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("got %v, want %q", tc.err, tc.want)
			continue
		}
		if ExitCode(tc.err) != ExitConfig || ExitCode(configError(tc.err)) != ExitConfig {
			t.Errorf("%v: exit %d, want %d", tc.err, ExitCode(tc.err), ExitConfig)
		}
	}
}
